//! Test guest `crash`: prints `GUEST crash: about to crash`, turns its
//! MMU off, sets VBAR_EL1 = 0 (no vectors) and executes an undefined
//! instruction. The exception goes to EL1 at IPA 0x200, where the VM has no
//! memory: the hypervisor must stop the VM as crashed. Nothing is printed
//! after. (Bare QEMU loops in its flash at 0x200: use a timeout.)
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::cpu;
    use testkit::{println, Env};

    testkit::guest!("crash", main);

    fn main(_env: &'static Env) {
        println!("GUEST crash: about to crash");
        cpu::disable_irqs();
        cpu::forget_vectors_and_mmu();
        cpu::undefined_instruction();
        // Only reached if the UDF somehow returned: stay silent.
        testkit::arch::psci::park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
