//! `docker top`: the container's processes as `ps -ef` shows them, read from /proc (no `ps`
//! needed), with two uid columns: `UID` as the container sees it (through its user
//! namespace map, named from the container's own /etc/passwd) and `HOST-UID` as the host
//! sees it. Docker shows only the first.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_idmap::UsernsMaps;

use crate::engine::Entry;
use crate::error::{EngineError, Result};
use crate::Engine;

/// What `GET /containers/{id}/top` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Top {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

const TITLES: [&str; 9] = [
    "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD", "HOST-UID",
];

/// USER_HZ: the unit of the times in /proc/PID/stat.
const HZ: u64 = 100;

impl Engine {
    /// The container's processes. `ps_args` other than ps's default set (`-ef`) are refused:
    /// berth reads /proc itself and shows `ps -ef`'s columns.
    pub async fn top(&self, name_or_id: &str, ps_args: &str) -> Result<Top> {
        if !matches!(ps_args.trim(), "" | "-ef" | "-e" | "ef" | "-f") {
            return Err(EngineError::InvalidParameter(format!(
                "ps_args `{ps_args}` is not supported: berth shows `ps -ef` columns (UID PID PPID C STIME TTY TIME CMD) plus HOST-UID; omit ps_args"
            )));
        }
        let entry: std::sync::Arc<Entry> = self.lookup(name_or_id)?;
        let rec = entry.record();
        if !rec.is_running() {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                rec.id
            )));
        }
        let rt = self.runtime();
        let id = rec.id.clone();
        let maps = rec.maps.clone();
        tokio::task::spawn_blocking(move || {
            let mut pids = rt
                .pids(&id)
                .map_err(|e| EngineError::System(e.to_string()))?;
            pids.sort_unstable();
            let ctx = ProcCtx::new();
            let names = pids
                .first()
                .map(|p| container_users(&Path::new("/proc").join(p.to_string())))
                .unwrap_or_default();
            let processes = pids
                .iter()
                .filter_map(|&pid| ctx.row(pid, maps.as_ref(), &names))
                .collect();
            Ok(Top {
                titles: TITLES.iter().map(|s| s.to_string()).collect(),
                processes,
            })
        })
        .await
        .map_err(|e| EngineError::System(e.to_string()))?
    }
}

/// What every row needs: the boot time and uptime, to turn start ticks into a clock time.
struct ProcCtx {
    boot: SystemTime,
    uptime: Duration,
}

impl ProcCtx {
    fn new() -> ProcCtx {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs_f64);
        ProcCtx {
            boot: SystemTime::now() - uptime,
            uptime,
        }
    }

    /// One `ps -ef` row plus HOST-UID; `None` if the process went away meanwhile.
    fn row(
        &self,
        pid: i32,
        maps: Option<&UsernsMaps>,
        names: &[(u32, String)],
    ) -> Option<Vec<String>> {
        let dir = Path::new("/proc").join(pid.to_string());
        let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
        let host_uid = std::fs::read_to_string(dir.join("status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()?;
        let uid = match maps {
            Some(m) => m.uid.to_container(host_uid),
            None => Some(host_uid),
        };
        let user = match uid {
            Some(u) => names
                .iter()
                .find(|(n, _)| *n == u)
                .map_or_else(|| u.to_string(), |(_, name)| name.clone()),
            // Not mapped in the container: the kernel shows the overflow id.
            None => berth_idmap::OVERFLOW_ID.to_string(),
        };
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmd = if cmdline.is_empty() {
            format!("[{}]", stat.comm)
        } else {
            String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ")
        };
        let cpu_secs = (stat.utime + stat.stime) / HZ;
        let started = Duration::from_millis(stat.start_ticks * 1000 / HZ);
        let age = self.uptime.saturating_sub(started).as_secs().max(1);
        Some(vec![
            user,
            pid.to_string(),
            stat.ppid.to_string(),
            (cpu_secs * 100 / age).to_string(),
            clock(self.boot + started),
            tty_name(stat.tty_nr),
            cpu_time(cpu_secs),
            cmd,
            host_uid.to_string(),
        ])
    }
}

struct Stat {
    comm: String,
    ppid: i32,
    tty_nr: u64,
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// /proc/PID/stat: the command sits in parentheses and may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After ")": state(3) ppid(4) pgrp session tty_nr(7) ... utime(14) stime(15) ... starttime(22)
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some(Stat {
        comm,
        ppid: f.get(1)?.parse().ok()?,
        tty_nr: n(7)?,
        utime: n(14)?,
        stime: n(15)?,
        start_ticks: n(22)?,
    })
}

/// `pts/N` for a pty (major 136-143), `?` for none, else `major:minor`.
fn tty_name(nr: u64) -> String {
    if nr == 0 {
        return "?".into();
    }
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 => format!("tty{minor}"),
        _ => format!("{major}:{minor}"),
    }
}

/// `HH:MM` (UTC), as ps shows a start time of today.
fn clock(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// `[DD-]HH:MM:SS`, as ps's TIME column.
fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// The user names of the container's /etc/passwd, read through a process's root
/// (`/proc/PID/root`, which is the container's root seen from the host). The file belongs
/// to the container: it is read with a size bound and bad lines are skipped.
fn container_users(proc_dir: &Path) -> Vec<(u32, String)> {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(proc_dir.join("root/etc/passwd")) else {
        return Vec::new();
    };
    let mut text = String::new();
    if f.take(1 << 20).read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    passwd_names(&text)
}

fn passwd_names(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            (!name.is_empty()).then(|| (uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_odd_command() {
        let line = "42 (a) b (c)) S 7 42 42 34816 42 4194560 100 0 0 0 250 150 0 0 20 0 1 0 12345 1000 100";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.ppid, 7);
        assert_eq!(tty_name(s.tty_nr), "pts/0");
        assert_eq!((s.utime, s.stime, s.start_ticks), (250, 150, 12345));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn columns() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(cpu_time(3661), "01:01:01");
        assert_eq!(cpu_time(90_061), "1-01:01:01");
        assert_eq!(
            passwd_names(
                "root:x:0:0::/root:/bin/sh\nbroken\n:x:1:1::/:\nnobody:x:65534:65534::/:\n"
            ),
            vec![(0, "root".to_string()), (65534, "nobody".to_string())]
        );
    }
}
