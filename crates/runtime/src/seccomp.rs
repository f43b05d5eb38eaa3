//! seccomp: turns the config's `linux.seccomp` into a classic BPF program with libseccomp.
//!
//! libseccomp resolves system call names for every architecture the profile lists and lays
//! out the program; this module only maps OCI's terms onto it, as runc and crun do. The
//! program is built and exported in the parent, before the container's process is forked:
//! the child only hands the bytes to seccomp(2) (`Filter::install`), so nothing of
//! libseccomp runs (or allocates) after fork. Because that load is ours, the filter flags
//! (TSYNC, LOG, SPEC_ALLOW) are set as the filter's attributes and read back from them for
//! seccomp(2).
//!
//! libseccomp is slow on big profiles: Docker's default (about 340 names on three x86
//! ABIs) takes it about 7 ms, more than the rest of a container's start. The same profile
//! comes again and again, so programs are kept in a cache directory under the runtime's
//! state root (written by root only), keyed by the profile, libseccomp's version and the
//! kernel's release.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::syscall;

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    prog: Vec<libc::sock_filter>,
    flags: u32,
}

/// The kernel's limit on a program's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

impl Filter {
    /// Installs the filter on the calling thread (all threads with TSYNC). Needs
    /// no_new_privs or CAP_SYS_ADMIN, as seccomp(2) does.
    pub fn install(&self) -> Result<()> {
        syscall::seccomp_set_filter(&self.prog, self.flags).map_err(|e| {
            Error::Seccomp(format!(
                "install the filter ({} instructions): {e}",
                self.prog.len()
            ))
        })
    }

    /// The cache file's form: the seccomp(2) flags, then the instructions, all in the
    /// machine's byte order.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.prog.len());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        for i in &self.prog {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.extend_from_slice(&[i.jt, i.jf]);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    fn from_bytes(b: &[u8]) -> Option<Filter> {
        let (flags, prog) = b.split_first_chunk::<4>()?;
        Some(Filter {
            flags: u32::from_ne_bytes(*flags),
            prog: parse_prog(prog)?,
        })
    }
}

/// struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }, in the machine's byte order;
/// `None` unless a whole program the kernel could take.
fn parse_prog(b: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if b.is_empty() || !b.len().is_multiple_of(8) || b.len() / 8 > MAX_INSNS {
        return None;
    }
    Some(
        b.chunks_exact(8)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect(),
    )
}

/// [`compile`], or the program compiled for the same profile before, from `cache` (created
/// if missing). A cache that cannot be read or written costs only the time to compile.
pub fn compile_cached(s: &LinuxSeccomp, cache: &Path) -> Result<Filter> {
    let path = cache.join(format!("{}.bpf", cache_key(s)?));
    if let Some(f) = fs::read(&path).ok().and_then(|b| Filter::from_bytes(&b)) {
        return Ok(f);
    }
    let f = compile(s)?;
    if let Err(e) = store(cache, &path, &f.to_bytes()) {
        tracing::debug!(
            "seccomp: cannot cache the program in {}: {e}",
            path.display()
        );
    }
    Ok(f)
}

/// What the program depends on: the profile, libseccomp's version (its output), the
/// kernel's release (libseccomp asks the kernel what it supports) and this crate's version.
fn cache_key(s: &LinuxSeccomp) -> Result<String> {
    let profile =
        serde_json::to_vec(s).map_err(|e| Error::Seccomp(format!("serialize the profile: {e}")))?;
    let lib = ScmpVersion::current().map_err(lib_err("read libseccomp's version"))?;
    let kernel = nix::sys::utsname::uname().map_err(|e| Error::sys("uname", e))?;
    let mut h = Sha256::new();
    for part in [
        env!("CARGO_PKG_VERSION").as_bytes(),
        lib.to_string().as_bytes(),
        kernel.release().as_encoded_bytes(),
        &profile,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `path` whole or not at all: a temporary file in the same directory, renamed.
fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| f.write_all(bytes));
    match written.and_then(|()| fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn lib_err(what: impl std::fmt::Display) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    move |e| Error::Seccomp(format!("{what}: {e}"))
}

/// Compiles `linux.seccomp`. Names libseccomp does not know are skipped (profiles list
/// calls of every kernel version and architecture), as runc and crun do.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter> {
    let ctx = build(s)?;
    Ok(Filter {
        prog: export(&ctx)?,
        flags: load_flags(&ctx)?,
    })
}

/// The libseccomp filter for `linux.seccomp`.
fn build(s: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    if s.listener_path().is_some() {
        return Err(Error::Seccomp(
            "listenerPath (seccomp notify agents) is not supported by berth-runtime".into(),
        ));
    }
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib_err("create a filter"))?;
    for a in s.architectures().iter().flatten() {
        ctx.add_arch(arch(*a)?)
            .map_err(lib_err(format_args!("add architecture {a:?}")))?;
    }
    for f in s.flags().iter().flatten() {
        match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(Error::Seccomp(
                    "flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is for seccomp notify agents, which berth-runtime does not support".into(),
                ))
            }
        }
        .map_err(lib_err(format_args!("set flag {f:?}")))?;
    }
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            // libseccomp refuses such a rule, and it would change nothing.
            continue;
        }
        let args = rule.args().as_deref().unwrap_or_default();
        let conds = args.iter().map(condition).collect::<Result<Vec<_>>>()?;
        // libseccomp takes one comparison per argument in a rule: runc and crun add a rule
        // per comparison when a rule compares one argument twice.
        let mut seen = HashSet::new();
        let split = !args.iter().all(|a| seen.insert(a.index()));
        for name in rule.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                tracing::debug!("seccomp: system call `{name}` is unknown here; rule skipped");
                continue;
            };
            let added = if split {
                conds
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, nr, &[*c]).map(|_| ()))
            } else {
                ctx.add_rule_conditional(act, nr, &conds).map(|_| ())
            };
            added.map_err(lib_err(format_args!("add the rule for `{name}`")))?;
        }
    }
    Ok(ctx)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(errno_value(errno.unwrap_or(libc::EPERM as u32))?),
        A::ScmpActTrace => ScmpAction::Trace(errno_value(errno.unwrap_or(0))? as u16),
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which berth-runtime does not support; use another action".into(),
            ))
        }
    })
}

/// The kernel keeps 16 bits of a rule's data (the errno, or the tracer's message).
fn errno_value(v: u32) -> Result<i32> {
    if v > u16::MAX as u32 {
        return Err(Error::Seccomp(format!(
            "errnoRet {v} is out of range (at most {})",
            u16::MAX
        )));
    }
    Ok(v as i32)
}

fn arch(a: Arch) -> Result<ScmpArch> {
    // oci-spec spells architectures as libseccomp does (SCMP_ARCH_X86_64, ...).
    let name = serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    ScmpArch::from_str(&name)
        .map_err(|e| Error::Seccomp(format!("architecture {a:?} is unknown to libseccomp: {e}")))
}

fn condition(a: &LinuxSeccompArg) -> Result<ScmpArgCompare> {
    if a.index() > 5 {
        return Err(Error::Seccomp(format!(
            "argument index {} is past the sixth argument",
            a.index()
        )));
    }
    use LinuxSeccompOperator as Op;
    let (op, datum) = match a.op() {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
        // OCI: `value` is the mask, `valueTwo` what the masked argument must equal.
        Op::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(a.value()),
            a.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(a.index() as u32, op, datum))
}

/// seccomp(2) flags from the filter's attributes.
fn load_flags(ctx: &ScmpFilterContext) -> Result<u32> {
    let mut flags = 0;
    let attrs = [
        (ctx.get_ctl_tsync(), libc::SECCOMP_FILTER_FLAG_TSYNC),
        (ctx.get_ctl_log(), libc::SECCOMP_FILTER_FLAG_LOG),
        (ctx.get_ctl_ssb(), libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW),
    ];
    for (on, flag) in attrs {
        if on.map_err(lib_err("read the filter's flags"))? {
            flags |= flag as u32;
        }
    }
    Ok(flags)
}

/// The program as libseccomp exports it (through a memfd: Debian's libseccomp 2.5 has no
/// export to memory).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let io = |e: std::io::Error| Error::Seccomp(format!("read the exported program: {e}"));
    let fd = rustix::fs::memfd_create("berth-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::Seccomp(format!("memfd_create: {e}")))?;
    let mut file = File::from(fd);
    ctx.export_bpf(&file)
        .map_err(lib_err("export the program"))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    // seccomp(2) would only say EINVAL for a program past the kernel's limit.
    parse_prog(&bytes).ok_or_else(|| {
        Error::Seccomp(format!(
            "libseccomp's program has {} bytes: not a whole program of at most {MAX_INSNS} instructions",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    /// libseccomp's own text form of the filter (PFC), to check what it was given.
    fn pfc(json: &str) -> String {
        let ctx = build(&parse(json)).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        ctx.export_pfc(&f).unwrap();
        let mut s = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn default_errno_with_allow_list() {
        let text = pfc(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[
                {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
                {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#);
        for want in [
            "# filter for arch x86_64",
            "# filter for arch x86 ",
            "# filter for arch x32",
            "# filter for syscall \"read\"",
            "# filter for syscall \"write\"",
            "action ERRNO(13)",
            "action ERRNO(38)",
        ] {
            assert!(text.contains(want), "no `{want}` in\n{text}");
        }
        // A rule with the default action changes nothing and is left out.
        assert!(!text.contains("\"getpid\""), "{text}");
        let f = compile(&parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        assert_eq!(f.flags, 0);
        // The program ends in a return (BPF_RET).
        assert_eq!(f.prog.last().unwrap().code as u32 & 0x07, libc::BPF_RET);
    }

    #[test]
    fn argument_conditions() {
        let text = pfc(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_NE"}]},
                {"names":["clone"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["read"],"action":"SCMP_ACT_TRAP","args":[{"index":2,"value":4294967296,"op":"SCMP_CMP_GT"},{"index":0,"value":3,"op":"SCMP_CMP_LE"}]},
                {"names":["write"],"action":"SCMP_ACT_LOG","args":[{"index":1,"value":5,"op":"SCMP_CMP_LT"},{"index":1,"value":9,"op":"SCMP_CMP_GE"}]}]}"#);
        for want in [
            "# filter for syscall \"personality\"",
            "action ERRNO(1)",
            // 2114060288 = 0x7e020000: the mask, compared with valueTwo.
            "if ($a0.lo32 & 0x7e020000 == 0)",
            "action KILL_PROCESS",
            // read: both conditions in one rule.
            "if ($a2.hi32 > 1)",
            "action TRAP",
            // write: two comparisons of one argument make two rules (either matches).
            "if ($a1.lo32 >= 5)",
            "if ($a1.lo32 >= 9)",
            "action LOG",
        ] {
            assert!(text.contains(want), "no `{want}` in\n{text}");
        }
    }

    #[test]
    fn unknown_names_are_skipped() {
        let text = pfc(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["no_such_call","read"],"action":"SCMP_ACT_ALLOW"}]}"#);
        assert!(text.contains("# filter for syscall \"read\""), "{text}");
        assert!(!text.contains("no_such_call"), "{text}");
    }

    #[test]
    fn flags_come_from_the_filter_attributes() {
        let f = compile(&parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        assert_eq!(
            f.flags,
            (libc::SECCOMP_FILTER_FLAG_TSYNC | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) as u32
        );
    }

    #[test]
    fn the_cache_gives_back_what_was_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let s = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let compiled = compile_cached(&s, &cache).unwrap();
        let files: Vec<_> = fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let path = files[0].path();
        assert_eq!(fs::read(&path).unwrap(), compiled.to_bytes());
        // A second compile reads the file: what is there is what is used.
        let mut planted = compile(&parse(r#"{"defaultAction":"SCMP_ACT_LOG"}"#)).unwrap();
        planted.flags = 0;
        fs::write(&path, planted.to_bytes()).unwrap();
        assert_eq!(
            compile_cached(&s, &cache).unwrap().to_bytes(),
            planted.to_bytes()
        );
        // A damaged file is compiled anew and replaced.
        fs::write(&path, [1, 2, 3, 4, 5]).unwrap();
        assert_eq!(
            compile_cached(&s, &cache).unwrap().to_bytes(),
            compiled.to_bytes()
        );
        assert_eq!(fs::read(&path).unwrap(), compiled.to_bytes());
        // Another profile has another key.
        let other = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        compile_cached(&other, &cache).unwrap();
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 2);
        // An unwritable cache only costs the compile.
        let blocked = dir.path().join("file");
        fs::write(&blocked, "").unwrap();
        assert_eq!(
            compile_cached(&s, &blocked.join("cache"))
                .unwrap()
                .to_bytes(),
            compiled.to_bytes()
        );
    }

    #[test]
    fn notify_and_bad_values_are_refused() {
        for (json, want) in [
            (r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#, "SCMP_ACT_NOTIFY"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
                "SCMP_ACT_NOTIFY",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock"}"#,
                "listenerPath",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#,
                "errnoRet 70000",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "argument index 6",
            ),
        ] {
            let e = compile(&parse(json)).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
