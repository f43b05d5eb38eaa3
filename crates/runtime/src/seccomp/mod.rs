//! seccomp: compiles the config's `linux.seccomp` to a classic BPF program.
//!
//! Why not seccompiler: its filters have one match action for all rules, while OCI gives
//! every rule its own action and errno (Docker's profile mixes ALLOW and ERRNO rules over
//! an ERRNO default). The compiler here is small: a linear list of blocks, one per rule
//! and syscall, first match wins, 64-bit argument comparisons split into two 32-bit words.
//!
//! Only the native architecture (x86_64) gets the rules; a system call made through any
//! other ABI (i386, x32) takes the default action, which is never more permissive.

mod table_x86_64;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};
use crate::syscall;

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    prog: Vec<libc::sock_filter>,
    flags: u32,
}

impl Filter {
    pub fn install(&self) -> Result<()> {
        syscall::seccomp_set_filter(&self.prog, self.flags)
            .map_err(|e| Error::Seccomp(format!("install the filter: {e}")))
    }
}

/// The number of a system call on this machine's architecture.
pub fn syscall_number(name: &str) -> Option<u32> {
    table_x86_64::SYSCALLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, nr)| *nr)
}

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | (errno.unwrap_or(0) & 0xffff),
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which berth-runtime does not support".into(),
            ))
        }
    })
}

/// An instruction whose jump targets are labels, resolved when the program is laid out.
#[derive(Clone, Copy)]
enum Ins {
    Load(u32),
    And(u32),
    Ret(u32),
    /// Conditional jump: `op` compares A with k; to `t` when true, `f` when false.
    Jmp {
        op: u16,
        k: u32,
        t: Label,
        f: Label,
    },
    Ja(Label),
    Mark(Label),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Next,
    Id(usize),
}

const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;

struct Builder {
    ins: Vec<Ins>,
    labels: usize,
}

impl Builder {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label::Id(self.labels)
    }

    fn push(&mut self, i: Ins) {
        self.ins.push(i);
    }

    /// One condition: falls through when it holds, jumps to `fail` when not.
    fn condition(&mut self, a: &LinuxSeccompArg, fail: Label) -> Result<()> {
        if a.index() > 5 {
            return Err(Error::Seccomp(format!(
                "argument index {} is past the sixth argument",
                a.index()
            )));
        }
        let lo_off = OFF_ARGS + 8 * a.index() as u32;
        let hi_off = lo_off + 4;
        let v = a.value();
        let (vhi, vlo) = ((v >> 32) as u32, v as u32);
        let pass = self.label();
        let next = Label::Next;
        use LinuxSeccompOperator as Op;
        match a.op() {
            Op::ScmpCmpEq => {
                self.push(Ins::Load(hi_off));
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: vhi,
                    t: next,
                    f: fail,
                });
                self.push(Ins::Load(lo_off));
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: vlo,
                    t: pass,
                    f: fail,
                });
            }
            Op::ScmpCmpNe => {
                self.push(Ins::Load(hi_off));
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: vhi,
                    t: next,
                    f: pass,
                });
                self.push(Ins::Load(lo_off));
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: vlo,
                    t: fail,
                    f: pass,
                });
            }
            Op::ScmpCmpMaskedEq => {
                let want = a.value_two().unwrap_or(0);
                self.push(Ins::Load(hi_off));
                self.push(Ins::And(vhi));
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: (want >> 32) as u32,
                    t: next,
                    f: fail,
                });
                self.push(Ins::Load(lo_off));
                self.push(Ins::And(vlo));
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: want as u32,
                    t: pass,
                    f: fail,
                });
            }
            op @ (Op::ScmpCmpGt | Op::ScmpCmpGe) => {
                // hi > v_hi: holds; hi < v_hi: fails; equal: decided by the low word.
                self.push(Ins::Load(hi_off));
                self.push(Ins::Jmp {
                    op: JGT,
                    k: vhi,
                    t: pass,
                    f: next,
                });
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: vhi,
                    t: next,
                    f: fail,
                });
                self.push(Ins::Load(lo_off));
                let j = if op == Op::ScmpCmpGt { JGT } else { JGE };
                self.push(Ins::Jmp {
                    op: j,
                    k: vlo,
                    t: pass,
                    f: fail,
                });
            }
            op @ (Op::ScmpCmpLt | Op::ScmpCmpLe) => {
                self.push(Ins::Load(hi_off));
                self.push(Ins::Jmp {
                    op: JGT,
                    k: vhi,
                    t: fail,
                    f: next,
                });
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: vhi,
                    t: next,
                    f: pass,
                });
                self.push(Ins::Load(lo_off));
                // lo < v: not (lo >= v); lo <= v: not (lo > v).
                let j = if op == Op::ScmpCmpLt { JGE } else { JGT };
                self.push(Ins::Jmp {
                    op: j,
                    k: vlo,
                    t: fail,
                    f: pass,
                });
            }
        }
        self.push(Ins::Mark(pass));
        Ok(())
    }

    /// Lays the program out: labels become relative jump offsets.
    fn finish(self) -> Result<Vec<libc::sock_filter>> {
        // Positions of real instructions, and where each label lands.
        let mut pos = std::collections::HashMap::new();
        let mut n = 0usize;
        for i in &self.ins {
            match i {
                Ins::Mark(Label::Id(l)) => {
                    pos.insert(*l, n);
                }
                Ins::Mark(Label::Next) => {}
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        for i in &self.ins {
            let here = out.len();
            let off = |l: &Label| -> Result<usize> {
                match l {
                    Label::Next => Ok(0),
                    Label::Id(id) => {
                        let to = pos[id];
                        Ok(to - here - 1)
                    }
                }
            };
            match i {
                Ins::Mark(_) => continue,
                Ins::Load(k) => out.push(stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, *k)),
                Ins::And(k) => out.push(stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, *k)),
                Ins::Ret(k) => out.push(stmt(libc::BPF_RET | libc::BPF_K, *k)),
                Ins::Ja(l) => {
                    let o = off(l)?;
                    out.push(stmt(libc::BPF_JMP | libc::BPF_JA, o as u32));
                }
                Ins::Jmp { op, k, t, f } => {
                    let (t, f) = (off(t)?, off(f)?);
                    if t > 255 || f > 255 {
                        return Err(Error::Seccomp("a rule is too long for a BPF jump".into()));
                    }
                    out.push(libc::sock_filter {
                        code: *op,
                        jt: t as u8,
                        jf: f as u8,
                        k: *k,
                    });
                }
            }
        }
        if out.len() > 4096 {
            return Err(Error::Seccomp(format!(
                "the filter compiles to {} instructions; the kernel takes at most 4096",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Compiles `linux.seccomp`. System call names this architecture does not have are skipped
/// (profiles list calls of every architecture), as runc and crun do.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter> {
    if cfg!(not(target_arch = "x86_64")) {
        return Err(Error::Seccomp(
            "berth-runtime's seccomp compiler knows x86_64 system calls only".into(),
        ));
    }
    if s.listener_path().is_some() {
        return Err(Error::Seccomp(
            "listenerPath (seccomp notify agents) is not supported".into(),
        ));
    }
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG as u32,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                libc::SECCOMP_FILTER_FLAG_TSYNC as u32
            }
            #[allow(unreachable_patterns)]
            other => return Err(Error::Seccomp(format!("flag {other:?} is not supported"))),
        };
    }
    let mut b = Builder {
        ins: Vec::new(),
        labels: 0,
    };
    let native = b.label();
    b.push(Ins::Load(OFF_ARCH));
    b.push(Ins::Jmp {
        op: JEQ,
        k: AUDIT_ARCH_X86_64,
        t: native,
        f: Label::Next,
    });
    b.push(Ins::Ret(default));
    b.push(Ins::Mark(native));
    b.push(Ins::Load(OFF_NR));
    let not_x32 = b.label();
    b.push(Ins::Jmp {
        op: JGE,
        k: X32_SYSCALL_BIT,
        t: Label::Next,
        f: not_x32,
    });
    b.push(Ins::Ret(default));
    b.push(Ins::Mark(not_x32));
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            // Matching changes nothing: the default applies anyway.
            continue;
        }
        let nrs: Vec<u32> = rule
            .names()
            .iter()
            .filter_map(|n| syscall_number(n))
            .collect();
        let args = rule.args().clone().unwrap_or_default();
        if args.is_empty() {
            // One block per chunk of names: load nr, compare each, return on a match.
            for chunk in nrs.chunks(200) {
                let hit = b.label();
                let miss = b.label();
                b.push(Ins::Load(OFF_NR));
                for nr in chunk {
                    b.push(Ins::Jmp {
                        op: JEQ,
                        k: *nr,
                        t: hit,
                        f: Label::Next,
                    });
                }
                b.push(Ins::Ja(miss));
                b.push(Ins::Mark(hit));
                b.push(Ins::Ret(act));
                b.push(Ins::Mark(miss));
            }
        } else {
            for nr in nrs {
                let fail = b.label();
                b.push(Ins::Load(OFF_NR));
                b.push(Ins::Jmp {
                    op: JEQ,
                    k: nr,
                    t: Label::Next,
                    f: fail,
                });
                for a in &args {
                    b.condition(a, fail)?;
                }
                b.push(Ins::Ret(act));
                b.push(Ins::Mark(fail));
            }
        }
    }
    b.push(Ins::Ret(default));
    Ok(Filter {
        prog: b.finish()?,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for seccomp programs: runs `prog` on (arch, nr, args).
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let code = i.code as u32;
            match code & 0x07 {
                libc::BPF_LD => {
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                libc::BPF_ALU => {
                    acc &= i.k;
                    pc += 1;
                }
                libc::BPF_RET => return i.k,
                libc::BPF_JMP => {
                    if code == libc::BPF_JMP | libc::BPF_JA {
                        pc += 1 + i.k as usize;
                        continue;
                    }
                    let cond = match (code & 0xf0) as u16 {
                        x if x == (libc::BPF_JEQ as u16) => acc == i.k,
                        x if x == (libc::BPF_JGT as u16) => acc > i.k,
                        x if x == (libc::BPF_JGE as u16) => acc >= i.k,
                        _ => panic!("unexpected jump"),
                    };
                    pc += 1 + if cond { i.jt as usize } else { i.jf as usize };
                }
                _ => panic!("unexpected instruction {code:#x}"),
            }
        }
    }

    fn profile(json: &str) -> Filter {
        compile(&serde_json::from_str(json).unwrap()).unwrap()
    }

    const A: u32 = AUDIT_ARCH_X86_64;

    #[test]
    fn default_errno_with_allow_list() {
        let f = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
                {"names":["read","write","no_such_call"],"action":"SCMP_ACT_ALLOW"},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        assert_eq!(run(&f.prog, A, 0, [0; 6]), RET_ALLOW);
        assert_eq!(run(&f.prog, A, 1, [0; 6]), RET_ALLOW);
        assert_eq!(run(&f.prog, A, 83, [0; 6]), RET_ERRNO | 13);
        assert_eq!(run(&f.prog, A, 2, [0; 6]), RET_ERRNO | 38);
        // Another ABI: the default.
        assert_eq!(run(&f.prog, 0x4000_0003, 0, [0; 6]), RET_ERRNO | 38);
        assert_eq!(run(&f.prog, A, X32_SYSCALL_BIT, [0; 6]), RET_ERRNO | 38);
    }

    #[test]
    fn argument_conditions() {
        let f = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_NE"}]},
                {"names":["clone"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["read"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":2,"value":4294967296,"op":"SCMP_CMP_GT"},{"index":0,"value":3,"op":"SCMP_CMP_LE"}]},
                {"names":["write"],"action":"SCMP_ACT_LOG","args":[{"index":1,"value":5,"op":"SCMP_CMP_LT"}]},
                {"names":["close"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":5,"op":"SCMP_CMP_GE"}]},
                {"names":["dup"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":7,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let personality = syscall_number("personality").unwrap();
        assert_eq!(run(&f.prog, A, personality, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(&f.prog, A, personality, [9, 0, 0, 0, 0, 0]),
            RET_ERRNO | 1
        );
        assert_eq!(
            run(&f.prog, A, personality, [8 | (1 << 32), 0, 0, 0, 0, 0]),
            RET_ERRNO | 1
        );
        let clone = syscall_number("clone").unwrap();
        assert_eq!(run(&f.prog, A, clone, [0x11, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(
            run(&f.prog, A, clone, [0x1000_0000, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        // read: arg2 > 2^32 and arg0 <= 3.
        assert_eq!(
            run(&f.prog, A, 0, [3, 0, (1 << 32) + 1, 0, 0, 0]),
            RET_KILL_PROCESS
        );
        assert_eq!(
            run(&f.prog, A, 0, [4, 0, (1 << 32) + 1, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(run(&f.prog, A, 0, [3, 0, 1 << 32, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(&f.prog, A, 0, [0, 0, 5 << 32, 0, 0, 0]),
            RET_KILL_PROCESS
        );
        assert_eq!(run(&f.prog, A, 1, [0, 4, 0, 0, 0, 0]), RET_LOG);
        assert_eq!(run(&f.prog, A, 1, [0, 5, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&f.prog, A, 1, [0, 1 << 33, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&f.prog, A, 3, [5, 0, 0, 0, 0, 0]), RET_TRAP);
        assert_eq!(run(&f.prog, A, 3, [4, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&f.prog, A, 3, [1 << 40, 0, 0, 0, 0, 0]), RET_TRAP);
        assert_eq!(run(&f.prog, A, 32, [7, 0, 0, 0, 0, 0]), RET_TRAP);
        assert_eq!(
            run(&f.prog, A, 32, [7 | (1 << 32), 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
    }

    #[test]
    fn many_names_chunk_correctly() {
        let names: Vec<String> = table_x86_64::SYSCALLS
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect();
        let f = profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[{{"names":[{}],"action":"SCMP_ACT_ALLOW"}}]}}"#,
            names.join(",")
        ));
        for (_, nr) in table_x86_64::SYSCALLS {
            assert_eq!(run(&f.prog, A, *nr, [0; 6]), RET_ALLOW, "nr {nr}");
        }
        assert_eq!(run(&f.prog, A, 1000, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn notify_is_refused() {
        let s: LinuxSeccomp =
            serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap();
        assert!(compile(&s)
            .unwrap_err()
            .to_string()
            .contains("SCMP_ACT_NOTIFY"));
    }
}
