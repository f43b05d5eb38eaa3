//! Device rules on cgroup v2: `linux.resources.devices` as an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, attached to the container's cgroup.
//!
//! cgroup v2 has no `devices.allow`/`devices.deny` files: the kernel asks the programs
//! attached to a process's cgroup (and its ancestors') whether an access to a device may
//! happen. The program gets `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }` (access in the high 16 bits of `access_type`, device type in the low
//! ones) and returns 1 to allow, 0 to deny.
//!
//! The rules mean what they mean on v1, where each one changes the state the earlier ones
//! left: the last rule that matches an access decides it. So the program checks the rules
//! from the last to the first and returns at the first match; an access no rule matches
//! is allowed, as in a fresh v1 cgroup (OCI configs start with a deny-all rule). runc
//! generates the same kind of program (libcontainer/cgroups/devices/devicefilter.go).

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::syscall::BpfInsn;

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers: r1 holds the context on entry; the prologue spreads it over r2..r5.
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;

// BPF_DEVCG_* values.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program for `rules`, in the order the config gives them.
pub(crate) fn program(rules: &[LinuxDeviceCgroup]) -> Vec<BpfInsn> {
    let mut p = vec![
        insn(LDX_MEM_W, TYPE, R1, 0, 0),
        insn(ALU32_AND_K, TYPE, 0, 0, 0xffff),
        insn(LDX_MEM_W, ACCESS, R1, 0, 0),
        insn(ALU32_RSH_K, ACCESS, 0, 0, 16),
        insn(LDX_MEM_W, MAJOR, R1, 4, 0),
        insn(LDX_MEM_W, MINOR, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let block = rule_block(rule);
        let matches_all = !block.iter().any(|i| i.code == JMP_JNE_K);
        p.extend(block);
        if matches_all {
            // Nothing after a rule that matches every access is reachable, and the
            // verifier refuses unreachable instructions.
            return p;
        }
    }
    p.push(insn(ALU32_MOV_K, R0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// One rule: jumps over itself unless the access matches, else returns its verdict.
fn rule_block(rule: &LinuxDeviceCgroup) -> Vec<BpfInsn> {
    // Each check is (register, value): "skip the rule if register != value".
    let mut checks: Vec<Vec<BpfInsn>> = Vec::new();
    match rule.typ() {
        Some(LinuxDeviceType::B) => checks.push(vec![jne(TYPE, DEV_BLOCK)]),
        Some(LinuxDeviceType::C | LinuxDeviceType::U) => checks.push(vec![jne(TYPE, DEV_CHAR)]),
        // `a` (all) and `p` (fifo, which the device controller never sees as a device).
        _ => {}
    }
    let access = access_bits(rule.access().as_deref());
    if access != ACC_ALL {
        // The rule matches only if the access asks for nothing it does not name.
        checks.push(vec![
            insn(ALU32_MOV_X, R1, ACCESS, 0, 0),
            insn(ALU32_AND_K, R1, 0, 0, !access & ACC_ALL),
            jne(R1, 0),
        ]);
    }
    if let Some(major) = rule.major().filter(|m| *m >= 0) {
        checks.push(vec![jne(MAJOR, major as i32)]);
    }
    if let Some(minor) = rule.minor().filter(|m| *m >= 0) {
        checks.push(vec![jne(MINOR, minor as i32)]);
    }
    let mut block: Vec<BpfInsn> = checks.into_iter().flatten().collect();
    block.push(insn(ALU32_MOV_K, R0, 0, 0, i32::from(rule.allow())));
    block.push(insn(EXIT, 0, 0, 0, 0));
    // Every jump skips to the end of the block.
    let len = block.len();
    for (i, ins) in block.iter_mut().enumerate() {
        if ins.code == JMP_JNE_K {
            ins.off = (len - i - 1) as i16;
        }
    }
    block
}

fn jne(reg: u8, value: i32) -> BpfInsn {
    insn(JMP_JNE_K, reg, 0, 0, value)
}

/// `rwm` letters as BPF_DEVCG_ACC_* bits; none given means all.
fn access_bits(access: Option<&str>) -> i32 {
    let Some(a) = access.filter(|a| !a.is_empty()) else {
        return ACC_ALL;
    };
    a.chars().fold(0, |bits, c| {
        bits | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        mm: Option<(i64, i64)>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(allow);
        d.set_typ(typ);
        d.set_major(mm.map(|m| m.0));
        d.set_minor(mm.map(|m| m.1));
        d.set_access(Some(access.into()));
        d
    }

    /// Runs a program the way the kernel would, on one access (enough of an interpreter
    /// for the instructions `program` emits).
    fn run(p: &[BpfInsn], typ: i32, access: i32, major: i32, minor: i32) -> u32 {
        let ctx = [
            ((access as u32) << 16) | typ as u32,
            major as u32,
            minor as u32,
        ];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1);
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_K => r[dst] = i.imm as u32 as u64,
                ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0] as u32,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn last_matching_rule_decides() {
        let p = program(&[
            rule(false, None, None, "rwm"),
            rule(true, Some(LinuxDeviceType::C), Some((1, 3)), "rw"),
            rule(true, Some(LinuxDeviceType::C), Some((136, -1)), "rwm"),
            rule(false, Some(LinuxDeviceType::C), Some((1, 3)), "w"),
        ]);
        // /dev/null: read allowed, write denied by the last rule, mknod never allowed.
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 3), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 0);
        // Any pty slave (wildcard minor).
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 136, 42), 1);
        // A block device with the same numbers is another device.
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 1, 3), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0);
    }

    #[test]
    fn no_matching_rule_allows_like_a_fresh_v1_cgroup() {
        let p = program(&[rule(false, Some(LinuxDeviceType::B), Some((8, 0)), "rwm")]);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 1), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 4, 1), 1);
    }

    #[test]
    fn nothing_follows_a_rule_that_matches_everything() {
        let p = program(&[
            rule(true, Some(LinuxDeviceType::C), Some((1, 3)), "rwm"),
            rule(false, None, None, "rwm"),
        ]);
        // The prologue, then the deny-all rule: set r0, exit.
        assert_eq!(p.len(), 8);
        assert_eq!(p.last().unwrap().code, EXIT);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
    }

    #[test]
    fn access_bits_from_letters() {
        assert_eq!(access_bits(Some("rwm")), ACC_ALL);
        assert_eq!(access_bits(None), ACC_ALL);
        assert_eq!(access_bits(Some("r")), ACC_READ);
        assert_eq!(access_bits(Some("mw")), ACC_MKNOD | ACC_WRITE);
    }
}
