//! Operator logs: one JSON line per CNI command (what ran, for which attachment, how it ended, how
//! long it took, and every rollback or best-effort step that failed), plus `debug` lines for the plan
//! and each kernel or API request. Lines go to stderr (the default, which runtimes capture) or are
//! appended to a node log file.
//!
//! Settings: `logLevel` (`error`, `info`, `debug`) and `logFile` at the top of the network config
//! (plumb-ipam also reads them, or `log_level`/`log_file`, inside `ipam`), overridden by
//! `PLUMB_LOG_LEVEL` and `PLUMB_LOG_FILE`. `error` (the default) writes only failed commands; `info`
//! every command; `debug` adds the plan and request lines.
//!
//! The file is shared by every plugin process of the node: it is opened `O_APPEND` and each line is
//! written with one `write(2)`, so lines of concurrent processes never interleave. When a process finds
//! it at or above [`MAX_BYTES`] before writing, it renames it to `<file>.1` (replacing the old one) under
//! an `flock` on `<file>.lock`, so one process rotates and the others append to the new file.
//!
//! Debug lines come through the `log` facade from the plumb crates only (targets `plumb_*`): a
//! dependency's own logging never reaches the file, and no plumb crate logs a header, token or key.

use crate::error::{CniError, CniResult};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The environment variable overriding `logLevel`.
pub const LEVEL_VAR: &str = "PLUMB_LOG_LEVEL";
/// The environment variable overriding `logFile`.
pub const FILE_VAR: &str = "PLUMB_LOG_FILE";
/// The size at which the log file is rotated to `<file>.1` (10 MiB).
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;

/// How much is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// Failed commands only.
    #[default]
    Error,
    /// Every command.
    Info,
    /// Every command, its plan and each kernel or API request.
    Debug,
}

impl Level {
    /// Parses `error`, `info` or `debug` (any case).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    /// The name written in the `level` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Where lines go and how many.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// The threshold.
    pub level: Level,
    /// The log file; `None` is stderr.
    pub file: Option<PathBuf>,
}

/// Reads the settings from the config object `raw` (top level, then each object in `sections`, whose
/// values win) and the environment (`var`), whose values win over both. A value that is not usable is
/// code 7 naming the field (or variable) and the fix.
pub fn settings(
    raw: Option<&Map<String, Value>>,
    sections: &[&str],
    var: impl Fn(&str) -> Option<String>,
) -> CniResult<Settings> {
    let mut out = Settings::default();
    let mut places: Vec<(String, &Map<String, Value>)> = Vec::new();
    if let Some(raw) = raw {
        places.push((String::new(), raw));
        for s in sections {
            if let Some(Value::Object(o)) = raw.get(*s) {
                places.push((format!("{s}."), o));
            }
        }
    }
    for (prefix, obj) in places {
        for key in ["logLevel", "log_level"] {
            if let Some(v) = obj.get(key) {
                let field = format!("field \"{prefix}{key}\"");
                out.level = level_of(v.as_str(), &field, v)?;
            }
        }
        for key in ["logFile", "log_file"] {
            if let Some(v) = obj.get(key) {
                let field = format!("field \"{prefix}{key}\"");
                out.file = file_of(v.as_str(), &field, v)?;
            }
        }
    }
    if let Some(v) = var(LEVEL_VAR).filter(|v| !v.is_empty()) {
        let shown = Value::String(v.clone());
        out.level = level_of(
            Some(&v),
            &format!("environment variable {LEVEL_VAR}"),
            &shown,
        )?;
    }
    if let Some(v) = var(FILE_VAR).filter(|v| !v.is_empty()) {
        let shown = Value::String(v.clone());
        out.file = file_of(
            Some(&v),
            &format!("environment variable {FILE_VAR}"),
            &shown,
        )?;
    }
    Ok(out)
}

fn level_of(s: Option<&str>, field: &str, shown: &Value) -> CniResult<Level> {
    s.and_then(Level::parse).ok_or_else(|| {
        CniError::config(format!(
            "{field}: {shown} is not a log level; use \"error\", \"info\" or \"debug\""
        ))
    })
}

fn file_of(s: Option<&str>, field: &str, shown: &Value) -> CniResult<Option<PathBuf>> {
    match s {
        Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(Some(PathBuf::from(p))),
        _ => Err(CniError::config(format!(
            "{field}: {shown} is not an absolute file path; give one such as \"/var/log/plumb/plumb.log\", or leave it out to log to stderr"
        ))),
    }
}

/// The RFC 3339 UTC time of now, to the millisecond.
pub fn now_rfc3339() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

/// One line: a JSON object with the fields in the given order, newline-terminated. Values are JSON
/// encoded, so no message can break a line or forge another.
pub fn format_line(fields: &[(&str, Value)]) -> String {
    let mut line = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&Value::String((*key).to_string()).to_string());
        line.push(':');
        line.push_str(&value.to_string());
    }
    line.push_str("}\n");
    line
}

/// Who the command is for, read from the process environment and the config.
#[derive(Debug, Clone, Default)]
struct Context {
    command: String,
    container: String,
    ifname: String,
    netns: String,
    network: Option<String>,
    pod_namespace: Option<String>,
    pod_name: Option<String>,
}

impl Context {
    fn from_process(raw: Option<&Map<String, Value>>) -> Context {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let args = var("CNI_ARGS");
        let arg = |key: &str| {
            args.split(';')
                .filter_map(|p| p.split_once('='))
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .next_back()
        };
        Context {
            command: var("CNI_COMMAND"),
            container: var("CNI_CONTAINERID"),
            ifname: var("CNI_IFNAME"),
            netns: var("CNI_NETNS"),
            network: raw
                .and_then(|r| r.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string),
            pod_namespace: arg("K8S_POD_NAMESPACE"),
            pod_name: arg("K8S_POD_NAME"),
        }
    }

    /// The fields every line of this command starts with (after time, level and binary).
    fn head(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("command", Value::from(self.command.as_str())),
            ("containerID", Value::from(self.container.as_str())),
            ("ifname", Value::from(self.ifname.as_str())),
        ];
        if let Some(ns) = &self.pod_namespace {
            f.push(("podNamespace", Value::from(ns.as_str())));
        }
        if let Some(name) = &self.pod_name {
            f.push(("podName", Value::from(name.as_str())));
        }
        f
    }
}

/// Where lines are written.
#[derive(Debug)]
enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(settings: &Settings) -> (Sink, Option<String>) {
        match &settings.file {
            None => (Sink::Stderr, None),
            Some(path) => match open_append(path) {
                Ok(file) => (
                    Sink::File {
                        path: path.clone(),
                        file,
                    },
                    None,
                ),
                Err(e) => (
                    Sink::Stderr,
                    Some(format!(
                        "cannot open the log file {}: {e}; logging to stderr",
                        path.display()
                    )),
                ),
            },
        }
    }

    /// Writes `line` with one `write(2)`, rotating the file first when it is full.
    fn write(&mut self, line: &str) {
        match self {
            Sink::Stderr => {
                let _ = std::io::stderr().write(line.as_bytes());
            }
            Sink::File { path, file } => {
                if file.metadata().is_ok_and(|m| m.len() >= MAX_BYTES) {
                    rotate(path, file);
                    if let Ok(fresh) = open_append(path) {
                        *file = fresh;
                    }
                }
                // One write: O_APPEND puts the whole line at the end, never between another's bytes.
                if file.write(line.as_bytes()).is_err() {
                    let _ = std::io::stderr().write(line.as_bytes());
                }
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// The rotated file's name: `<file>.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// The side lock file serialising rotation: `<file>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Renames `path` (which `file` is open on) to `<path>.1` under the side lock, unless another process
/// did so already (the name then holds a newer file, or none).
fn rotate(path: &Path, file: &File) {
    let Ok(lock) = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(lock_path(path))
    else {
        return;
    };
    // SAFETY: the descriptor is owned by `lock`, which outlives the call; flock has no memory effects.
    // The lock is released when `lock` is closed at the end of this function.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return;
    }
    let (Ok(ours), Ok(named)) = (file.metadata(), std::fs::metadata(path)) else {
        return;
    };
    if ours.ino() == named.ino() && ours.dev() == named.dev() && named.len() >= MAX_BYTES {
        let _ = std::fs::rename(path, rotated_path(path));
    }
}

/// The logger of this process: installed once per command by [`start`].
struct Logger {
    binary: &'static str,
    level: Level,
    started: Instant,
    context: Context,
    sink: Mutex<Sink>,
    failed: Mutex<Vec<String>>,
    /// Why the configured settings were not usable (a DEL logs with the defaults instead).
    settings_error: Option<String>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

impl Logger {
    fn emit(&self, level: Level, mut fields: Vec<(&'static str, Value)>) {
        if level > self.level {
            return;
        }
        let mut all = vec![
            ("time", Value::from(now_rfc3339())),
            ("level", Value::from(level.as_str())),
            ("binary", Value::from(self.binary)),
            ("pid", Value::from(std::process::id())),
        ];
        all.append(&mut fields);
        let line = format_line(&all);
        match self.sink.lock() {
            Ok(mut sink) => sink.write(&line),
            Err(poisoned) => poisoned.into_inner().write(&line),
        }
    }

    fn command_line(&self, exit: i32, reply: &Value) -> (Level, Vec<(&'static str, Value)>) {
        let c = &self.context;
        let mut f = c.head();
        f.push(("netns", Value::from(c.netns.as_str())));
        if let Some(n) = &c.network {
            f.push(("network", Value::from(n.as_str())));
        }
        let level = if exit == 0 {
            f.push(("outcome", Value::from("ok")));
            Level::Info
        } else {
            f.push(("outcome", Value::from("error")));
            f.push(("code", reply.get("code").cloned().unwrap_or(Value::Null)));
            f.push(("msg", reply.get("msg").cloned().unwrap_or(Value::Null)));
            if let Some(d) = reply.get("details") {
                f.push(("details", d.clone()));
            }
            Level::Error
        };
        let failed = self.failed.lock().map(|v| v.clone()).unwrap_or_default();
        if !failed.is_empty() {
            f.push(("failedSteps", Value::from(failed)));
        }
        // A DEL that went on with the default settings says why (the failed command itself says it).
        if let Some(e) = self
            .settings_error
            .as_ref()
            .filter(|e| reply.get("msg") != Some(&Value::from(e.as_str())))
        {
            f.push(("logSettingsError", Value::from(e.as_str())));
        }
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        f.push(("durationMs", Value::from((ms * 1000.0).round() / 1000.0)));
        (level, f)
    }
}

impl ::log::Log for Logger {
    fn enabled(&self, meta: &::log::Metadata) -> bool {
        meta.target().starts_with("plumb") && meta.level() <= ::log::Level::Debug
    }

    fn log(&self, record: &::log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            ::log::Level::Error => Level::Error,
            ::log::Level::Warn | ::log::Level::Info => Level::Info,
            _ => Level::Debug,
        };
        let mut f = self.context.head();
        f.push(("msg", Value::from(record.args().to_string())));
        self.emit(level, f);
    }

    fn flush(&self) {}
}

/// Installs this process's logger for one command of `binary`, with the settings of the config in
/// `stdin` (top level and `sections`) and the environment. Returns the settings error, if any: the
/// command should fail with it (code 7), except DEL, which logs with the defaults and goes on.
pub fn start(binary: &'static str, sections: &[&str], stdin: &[u8]) -> Option<CniError> {
    let raw = serde_json::from_slice::<Map<String, Value>>(stdin).ok();
    let (settings, error) = match settings(raw.as_ref(), sections, |k| std::env::var(k).ok()) {
        Ok(s) => (s, None),
        Err(e) => (Settings::default(), Some(e)),
    };
    let (sink, open_error) = Sink::open(&settings);
    let logger = Logger {
        binary,
        level: settings.level,
        started: Instant::now(),
        context: Context::from_process(raw.as_ref()),
        sink: Mutex::new(sink),
        failed: Mutex::new(Vec::new()),
        settings_error: error.as_ref().map(|e| e.msg.clone()).or(open_error),
    };
    let max = match settings.level {
        Level::Error => ::log::LevelFilter::Error,
        Level::Info => ::log::LevelFilter::Info,
        Level::Debug => ::log::LevelFilter::Debug,
    };
    if LOGGER.set(logger).is_ok() {
        if let Some(l) = LOGGER.get() {
            if ::log::set_logger(l).is_ok() {
                ::log::set_max_level(max);
            }
        }
    }
    error
}

/// Records a rollback or best-effort step that failed, for the command's line (and a debug line now).
pub fn failed_step(step: &str, why: &str) {
    let text = format!("{step}: {why}");
    if let Some(l) = LOGGER.get() {
        let mut f = l.context.head();
        f.push(("msg", Value::from(format!("step failed: {text}"))));
        l.emit(Level::Debug, f);
        if let Ok(mut v) = l.failed.lock() {
            v.push(text);
        }
    }
}

/// Writes the command's line: its outcome from the exit code and the reply printed on stdout (an
/// error object when `exit` is not 0).
pub fn finish(exit: i32, reply: &Value) {
    if let Some(l) = LOGGER.get() {
        let (level, fields) = l.command_line(exit, reply);
        l.emit(level, fields);
    }
}

/// [`finish`] for the deadline watchdog: never waits on a sink another thread holds.
pub fn finish_without_waiting(reply: &Value) {
    if let Some(l) = LOGGER.get() {
        let (level, fields) = l.command_line(1, reply);
        if level <= l.level {
            if let Ok(mut sink) = l.sink.try_lock() {
                let mut all = vec![
                    ("time", Value::from(now_rfc3339())),
                    ("level", Value::from(level.as_str())),
                    ("binary", Value::from(l.binary)),
                    ("pid", Value::from(std::process::id())),
                ];
                all.extend(fields);
                sink.write(&format_line(&all));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn levels_parse_in_any_case_and_order_by_verbosity() {
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("info"), Some(Level::Info));
        assert_eq!(Level::parse("Error"), Some(Level::Error));
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Error < Level::Info && Level::Info < Level::Debug);
    }

    #[test]
    fn defaults_are_errors_to_stderr() {
        let s = settings(Some(&obj(json!({"name": "n"}))), &[], |_| None).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!((s.level, s.file), (Level::Error, None));
    }

    #[test]
    fn section_values_win_over_top_level_and_env_wins_over_both() {
        let raw = obj(json!({
            "logLevel": "info", "logFile": "/var/log/a.log",
            "ipam": {"log_level": "debug", "log_file": "/var/log/b.log"}
        }));
        let s = settings(Some(&raw), &["ipam"], |_| None).unwrap();
        assert_eq!(
            (s.level, s.file.as_deref()),
            (Level::Debug, Some(Path::new("/var/log/b.log")))
        );
        // Without the section, the top level applies.
        let s = settings(Some(&raw), &[], |_| None).unwrap();
        assert_eq!(s.level, Level::Info);
        let env = |k: &str| match k {
            LEVEL_VAR => Some("error".to_string()),
            FILE_VAR => Some("/tmp/c.log".to_string()),
            _ => None,
        };
        let s = settings(Some(&raw), &["ipam"], env).unwrap();
        assert_eq!(
            (s.level, s.file.as_deref()),
            (Level::Error, Some(Path::new("/tmp/c.log")))
        );
    }

    #[test]
    fn bad_values_are_code_7_naming_the_field() {
        let e = settings(Some(&obj(json!({"logLevel": "loud"}))), &[], |_| None).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg
                .starts_with("field \"logLevel\": \"loud\" is not a log level"),
            "{}",
            e.msg
        );
        let raw = obj(json!({"ipam": {"log_level": 3}}));
        let e = settings(Some(&raw), &["ipam"], |_| None).unwrap_err();
        assert!(
            e.msg.starts_with("field \"ipam.log_level\": 3 is not"),
            "{}",
            e.msg
        );
        let e = settings(Some(&obj(json!({"logFile": "rel.log"}))), &[], |_| None).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg
                .contains("field \"logFile\": \"rel.log\" is not an absolute file path"),
            "{}",
            e.msg
        );
        let e = settings(None, &[], |k| (k == LEVEL_VAR).then(|| "x".into())).unwrap_err();
        assert!(
            e.msg
                .starts_with("environment variable PLUMB_LOG_LEVEL: \"x\""),
            "{}",
            e.msg
        );
    }

    #[test]
    fn lines_are_one_json_object_in_field_order() {
        let line = format_line(&[
            ("time", json!("2026-01-01T00:00:00.000Z")),
            ("msg", json!("two\nlines \"quoted\"")),
            ("code", json!(7)),
        ]);
        assert_eq!(
            line,
            "{\"time\":\"2026-01-01T00:00:00.000Z\",\"msg\":\"two\\nlines \\\"quoted\\\"\",\"code\":7}\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "two\nlines \"quoted\"");
    }

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        let t = now_rfc3339();
        // 2026-11-30T14:00:05.123Z
        assert_eq!(t.len(), 24, "{t}");
        assert!(
            t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
            "{t}"
        );
        let parsed: jiff::Timestamp = t.parse().unwrap();
        let age = jiff::Timestamp::now().duration_since(parsed);
        assert!(age.as_secs() < 5, "{t}");
    }

    #[test]
    fn a_full_file_is_rotated_once_and_the_line_lands_in_a_new_one() {
        let dir = std::env::temp_dir().join(format!("plumb-log-unit-{}", std::process::id()));
        let path = dir.join("plumb.log");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, vec![b'x'; MAX_BYTES as usize]).unwrap();
        let settings = Settings {
            level: Level::Info,
            file: Some(path.clone()),
        };
        let (mut a, _) = Sink::open(&settings);
        let (mut b, _) = Sink::open(&settings);
        a.write("first\n");
        // `b` was open on the full file too: it sees the rotation was done and does not rotate again.
        b.write("second\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nsecond\n");
        assert_eq!(
            std::fs::metadata(rotated_path(&path)).unwrap().len(),
            MAX_BYTES
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
