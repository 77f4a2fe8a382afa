//! `mkbundle OUT NAME=FILE...`: writes the boot bundle, a cpio newc archive
//! holding each FILE under NAME (see `hv_abi::bundle`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, specs)) = args.split_first() else {
        eprintln!("usage: mkbundle OUT NAME=FILE...");
        return ExitCode::from(2);
    };
    let mut files = Vec::new();
    for spec in specs {
        let Some((name, path)) = spec.split_once('=') else {
            eprintln!("mkbundle: `{spec}`: expected NAME=FILE");
            return ExitCode::from(2);
        };
        match std::fs::read(path) {
            Ok(data) => files.push((name.to_string(), data)),
            Err(e) => {
                eprintln!("mkbundle: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    if let Err(e) = std::fs::write(out, hv_abi::bundle::write(&refs)) {
        eprintln!("mkbundle: {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
