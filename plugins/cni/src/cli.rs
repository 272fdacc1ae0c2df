//! A plugin binary run by a person rather than a runtime: `--help`, `--version`, and a short about
//! line when run bare, instead of a CNI error.
//!
//! "Run by a person" means `CNI_COMMAND` is unset or empty. A bare run (no argument) prints the about
//! line only when none of `CNI_CONTAINERID`, `CNI_NETNS` and `CNI_IFNAME` is set either: a runtime that
//! forgot `CNI_COMMAND` still gets the CNI error (code 4) it can read.

use crate::version::SUPPORTED;

/// The plumb version (the Cargo package version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binaries were built from ("unknown" outside a git tree).
pub const COMMIT: &str = env!("PLUMB_GIT_COMMIT");

/// What `--help` says about one binary.
#[derive(Debug, Clone, Copy)]
pub struct About {
    /// The binary's name.
    pub name: &'static str,
    /// One sentence: what it is.
    pub summary: &'static str,
    /// Where its config reference is (a docs file and a README section).
    pub reference: &'static str,
    /// More text for `--help` (subcommands, for a binary that has them); may be empty.
    pub more: &'static str,
}

impl About {
    /// An about with no extra help text.
    pub const fn new(name: &'static str, summary: &'static str, reference: &'static str) -> About {
        About {
            name,
            summary,
            reference,
            more: "",
        }
    }
}

/// The supported CNI versions, comma-separated.
pub fn cni_versions() -> String {
    SUPPORTED
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The about line: name, version, commit and CNI versions.
pub fn about_line(name: &str) -> String {
    format!(
        "{name} v{VERSION} (commit {COMMIT}) CNI protocol versions supported: {}",
        cni_versions()
    )
}

/// The `--version` text.
pub fn version_text(name: &str) -> String {
    format!(
        "{name} {VERSION}\ncommit: {COMMIT}\nCNI versions: {}\n",
        cni_versions()
    )
}

/// The `--help` text.
pub fn help_text(about: &About) -> String {
    let mut s = format!(
        "{} {VERSION}: {}\n\n\
         A CNI plugin: container runtimes run it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC, VERSION)\n\
         and the network config on stdin; it prints the CNI result on stdout.\n\n\
         Config reference: {}\n\n\
         Settings (network config, top level):\n\
         \x20 logLevel   error (default: failed commands only), info (every command), debug (plan and requests)\n\
         \x20 logFile    absolute path of the node log file (default: stderr); rotated to <file>.1 at 10 MiB\n\
         Environment (wins over the config):\n\
         \x20 {}    as logLevel\n\
         \x20 {}     as logFile\n\
         Node settings (environment only; tenants cannot set them):\n\
         \x20 {}  the tenant policy file (default {}; see docs/policy.md)\n\
         \x20 {}  how long a command may run before it is stopped (default {} s)\n\n\
         Options (without CNI_COMMAND):\n\
         \x20 -h, --help      this text\n\
         \x20 -V, --version   the plumb version, the git commit and the CNI versions\n",
        about.name,
        about.summary,
        about.reference,
        crate::log::LEVEL_VAR,
        crate::log::FILE_VAR,
        crate::policy::ENV_VAR,
        crate::policy::DEFAULT_PATH,
        crate::deadline::VAR,
        crate::deadline::DEFAULT.as_secs(),
    );
    if !about.more.is_empty() {
        s.push('\n');
        s.push_str(about.more);
        s.push('\n');
    }
    s
}

/// What a person's run asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// `-h`/`--help`.
    Help,
    /// `-V`/`--version`.
    Version,
    /// No argument and no CNI variable: the about line.
    About,
    /// An argument this binary does not know.
    Unknown(String),
}

/// What a run with `args` asks for, or `None` when it is a CNI call (CNI_COMMAND set, or CNI
/// variables set without arguments). `var` reads the environment.
pub fn ask(args: &[String], var: impl Fn(&str) -> Option<String>) -> Option<Ask> {
    let set = |k: &str| var(k).is_some_and(|v| !v.is_empty());
    if set("CNI_COMMAND") {
        return None;
    }
    match args.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => Some(Ask::Help),
        Some("-V" | "--version" | "version") => Some(Ask::Version),
        Some(other) => Some(Ask::Unknown(other.to_string())),
        None if ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
            .iter()
            .any(|k| set(k)) =>
        {
            None
        }
        None => Some(Ask::About),
    }
}

/// Answers `ask` on stdout/stderr; returns the exit code (0, or 2 for an unknown argument).
pub fn answer(about: &About, ask: &Ask) -> i32 {
    match ask {
        Ask::Help => {
            print!("{}", help_text(about));
            0
        }
        Ask::Version => {
            print!("{}", version_text(about.name));
            0
        }
        Ask::About => {
            eprintln!("{}", about_line(about.name));
            0
        }
        Ask::Unknown(arg) => {
            eprintln!(
                "{}: unknown argument {arg:?}; run it with --help or --version (a runtime runs it with CNI_COMMAND set)",
                about.name
            );
            2
        }
    }
}

/// Handles a person's run of a plugin binary: `Some(exit code)` when it was one, `None` for a CNI
/// call.
pub fn by_person(about: &About) -> Option<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ask(&args, |k| std::env::var(k).ok()).map(|a| answer(about, &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_cni_call_is_never_a_persons_run() {
        let cni = [("CNI_COMMAND", "ADD")];
        assert_eq!(ask(&args(&["--help"]), env(&cni)), None);
        assert_eq!(ask(&[], env(&cni)), None);
        // A runtime that forgot CNI_COMMAND gets its CNI error, not the about line.
        assert_eq!(ask(&[], env(&[("CNI_CONTAINERID", "c1")])), None);
    }

    #[test]
    fn a_person_gets_help_version_or_the_about_line() {
        assert_eq!(ask(&args(&["--help"]), env(&[])), Some(Ask::Help));
        assert_eq!(
            ask(&args(&["-V"]), env(&[("CNI_COMMAND", "")])),
            Some(Ask::Version)
        );
        assert_eq!(
            ask(&[], env(&[("CNI_PATH", "/opt/cni/bin")])),
            Some(Ask::About)
        );
        assert_eq!(
            ask(&args(&["--frobnicate"]), env(&[])),
            Some(Ask::Unknown("--frobnicate".into()))
        );
    }

    #[test]
    fn texts_name_the_version_commit_reference_and_settings() {
        let line = about_line("plumb-x");
        assert!(
            line.starts_with(&format!("plumb-x v{VERSION} (commit {COMMIT})")),
            "{line}"
        );
        assert!(
            line.ends_with("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            "{line}"
        );
        let v = version_text("plumb-x");
        assert!(v.contains(&format!("commit: {COMMIT}")) && v.contains("CNI versions: 0.1.0"));
        let about = About {
            more: "subcommands: list",
            ..About::new("plumb-x", "a test plugin", "docs/x.md and README \"X\"")
        };
        let h = help_text(&about);
        for part in [
            "a test plugin",
            "docs/x.md",
            "logLevel",
            "logFile",
            "PLUMB_LOG_LEVEL",
            "PLUMB_LOG_FILE",
            "PLUMB_POLICY_FILE",
            "docs/policy.md",
            "subcommands: list",
        ] {
            assert!(h.contains(part), "{part}: {h}");
        }
    }
}
