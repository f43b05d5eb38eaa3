//! Container logs in Docker's json-file format: one JSON object a line,
//! `{"log":"text\n","stream":"stdout","time":"2024-05-01T12:00:00.123456789Z"}`.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::timefmt;

/// Docker cuts lines longer than this into several entries.
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    pub time: String,
}

/// Appends a container's output to its log, one entry per line.
pub struct Writer {
    file: File,
    partial: [Vec<u8>; 2],
}

impl Writer {
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Writer {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Logs `data`; a line without its newline yet waits for the rest (or [`Writer::flush`]).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let idx = stream as usize;
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.partial[idx].extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
            self.emit(stream)?;
        }
        self.partial[idx].extend_from_slice(rest);
        if self.partial[idx].len() >= MAX_LINE {
            self.emit(stream)?;
        }
        Ok(())
    }

    /// Writes out a pending partial line (at end of stream).
    pub fn flush(&mut self, stream: Stream) -> std::io::Result<()> {
        if !self.partial[stream as usize].is_empty() {
            self.emit(stream)?;
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream) -> std::io::Result<()> {
        let buf = std::mem::take(&mut self.partial[stream as usize]);
        let entry = Entry {
            log: String::from_utf8_lossy(&buf).into_owned(),
            stream,
            time: timefmt::now(),
        };
        let mut line = serde_json::to_vec(&entry)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub stdout: bool,
    pub stderr: bool,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only the last N entries.
    pub tail: Option<usize>,
}

impl Filter {
    fn wants(&self, e: &Entry) -> bool {
        let stream_ok = match e.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        if !stream_ok {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = timefmt::parse_rfc3339(&e.time) else {
            return true;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// Reads a log from the start, then whatever is appended later (for `--follow`).
pub struct Reader {
    reader: BufReader<File>,
    line: String,
}

impl Reader {
    pub fn open(path: &Path) -> std::io::Result<Reader> {
        Ok(Reader {
            reader: BufReader::new(File::open(path)?),
            line: String::new(),
        })
    }

    /// Every complete entry not read yet that passes `filter` (tail applies to this batch).
    pub fn read_new(&mut self, filter: &Filter) -> std::io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        loop {
            let start = self.reader.stream_position()?;
            let n = self.reader.read_line(&mut self.line)?;
            if n == 0 {
                break;
            }
            if !self.line.ends_with('\n') {
                // A line being written right now: read it again next time.
                self.reader.seek(SeekFrom::Start(start))?;
                self.line.clear();
                break;
            }
            if let Ok(e) = serde_json::from_str::<Entry>(&self.line) {
                if filter.wants(&e) {
                    out.push(e);
                }
            }
            self.line.clear();
        }
        if let Some(t) = filter.tail {
            let skip = out.len().saturating_sub(t);
            out.drain(..skip);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_in_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = Writer::open(&path).unwrap();
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\npartial").unwrap();
        w.flush(Stream::Stdout).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["log"], "hello\n");
        assert_eq!(first["stream"], "stdout");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));

        let all = Filter {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let logs: Vec<String> = Reader::open(&path)
            .unwrap()
            .read_new(&all)
            .unwrap()
            .into_iter()
            .map(|e| e.log)
            .collect();
        assert_eq!(logs, ["hello\n", "oops\n", "world\n", "partial"]);
        let out_only = Filter {
            stdout: true,
            tail: Some(1),
            ..Default::default()
        };
        let logs = Reader::open(&path).unwrap().read_new(&out_only).unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].log, "partial");
    }

    #[test]
    fn follow_reads_only_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = Writer::open(&path).unwrap();
        w.write(Stream::Stdout, b"a\n").unwrap();
        let all = Filter {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.read_new(&all).unwrap().len(), 1);
        assert_eq!(r.read_new(&all).unwrap().len(), 0);
        w.write(Stream::Stdout, b"b\n").unwrap();
        assert_eq!(r.read_new(&all).unwrap()[0].log, "b\n");
    }
}
