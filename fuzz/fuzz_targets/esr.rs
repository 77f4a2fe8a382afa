//! Syndromes: every ESR_EL2 a trap can carry, decoded as the hypervisor
//! does (class, data abort ISS, trapped MSR/MRS and its policy, the abort
//! injected back), and the guest's stage-1 walk the hypervisor redoes for
//! an S1PTW fault, over page tables the input supplies.
#![no_main]

use hv_arm::esr::{self, AccessSize, DataAbort, Esr, ExceptionClass, SysRegAccess};
use hv_fuzz::Input;
use hypervisor::s1walk::{self, Stage1Regs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let raw = input.u64();
    let spsr = input.u64();
    let loaded = input.u64();
    let e = Esr(raw);
    let _ = std::fmt::format(format_args!("{e} {:?}", e.class()));
    let _ = esr::fault_status_description(e.fault_status());
    if let Some(level) = esr::fault_level(e.fault_status()) {
        assert!(level <= 3);
    }
    match DataAbort::decode(raw) {
        abort @ DataAbort::Emulatable { size, register, sixty_four, .. } => {
            assert!(register <= 31);
            let value = abort.load_value(loaded);
            if !sixty_four {
                assert_eq!(value >> 32, 0, "a W register load leaves the upper half zero");
            }
            if size != AccessSize::Double && value & !size.mask() != 0 {
                // Only a sign extension may set bits above the access.
                assert_eq!(value | size.mask(), if sixty_four { u64::MAX } else { 0xffff_ffff });
            }
        }
        DataAbort::NotDescribed { .. } => assert_eq!(raw & (1 << 24), 0),
    }
    let access = SysRegAccess::decode(raw);
    assert!(access.op0 <= 3 && access.op1 <= 7 && access.crn <= 15 && access.crm <= 15 && access.op2 <= 7 && access.rt <= 31);
    let _ = hypervisor::sysreg_policy::policy(access);

    let level = input.u8();
    let walk_level = (level & 4 != 0).then_some(level & 3);
    let injected = esr::injected_external_abort(raw, spsr, walk_level);
    let class = ExceptionClass::from_esr(injected);
    assert!(matches!(
        class,
        ExceptionClass::InstructionAbortLowerEl
            | ExceptionClass::InstructionAbortSameEl
            | ExceptionClass::DataAbortLowerEl
            | ExceptionClass::DataAbortSameEl
    ));
    assert!(matches!(injected & 0x3f, 0x10 | 0x14..=0x17));

    // The guest's stage-1 tables: the rest of the input is its RAM from
    // IPA 0, read a 64-bit word at a time; the walk must end (it has at
    // most four levels) whatever the tables hold.
    let regs = Stage1Regs { ttbr0: input.u64(), ttbr1: input.u64(), tcr: input.u64() };
    let va = input.u64();
    let fault_ipa = input.u64();
    let ram = input.rest();
    let mut reads = 0;
    let found = s1walk::fault_level(va, regs, fault_ipa, |ipa| {
        reads += 1;
        let at = usize::try_from(ipa).ok()?;
        let word = ram.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(word.try_into().ok()?))
    });
    assert!(reads <= 4, "{reads} descriptor reads");
    assert!(found.is_none_or(|l| l <= 3));
});
