//! `CNI_ARGS`: `KEY=VALUE;KEY=VALUE` pairs, with `IgnoreUnknown` and the keys Kubernetes runtimes send.

use crate::error::{CniError, CniResult};

/// The keys every plumb plugin understands in `CNI_ARGS`.
pub const COMMON_KEYS: [&str; 7] = [
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "IP",
    "MAC",
];

/// Parsed `CNI_ARGS`, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `K=V;K=V`. Empty segments are skipped; a segment without `=` is error code 4.
    pub fn parse(raw: &str) -> CniResult<CniArgs> {
        let mut pairs = Vec::new();
        for part in raw.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CniError::env(format!(
                    "CNI_ARGS: {part:?} is not KEY=VALUE; separate pairs with ';'"
                ))
            })?;
            if k.is_empty() {
                return Err(CniError::env(format!(
                    "CNI_ARGS: {part:?} has an empty key"
                )));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of a key (the last one given wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `IgnoreUnknown` is set to a true value (`1`, `true`, any case).
    pub fn ignore_unknown(&self) -> bool {
        self.get("IgnoreUnknown")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// Fails (code 4) on a key outside [`COMMON_KEYS`] and `extra`, unless `IgnoreUnknown` is true.
    pub fn check_known(&self, plugin: &str, extra: &[&str]) -> CniResult<()> {
        if self.ignore_unknown() {
            return Ok(());
        }
        for (k, _) in &self.pairs {
            if !COMMON_KEYS.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
                return Err(CniError::env(format!(
                    "CNI_ARGS: key {k:?} is not known to {plugin}; add IgnoreUnknown=true to pass keys meant for other plugins"
                )));
            }
        }
        Ok(())
    }

    /// The Kubernetes pod identity Multus and kubelet runtimes pass, where given.
    pub fn pod(&self) -> PodRef {
        let non_empty = |k: &str| self.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        PodRef {
            namespace: non_empty("K8S_POD_NAMESPACE"),
            name: non_empty("K8S_POD_NAME"),
            uid: non_empty("K8S_POD_UID"),
        }
    }
}

/// Which Kubernetes pod an attachment belongs to, as far as the runtime told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub name: Option<String>,
    /// `K8S_POD_UID`.
    pub uid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multus_args() {
        let a = CniArgs::parse("IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1").unwrap();
        assert!(a.ignore_unknown());
        assert_eq!(
            a.pod(),
            PodRef {
                namespace: Some("ns".into()),
                name: Some("web-0".into()),
                uid: Some("u-1".into())
            }
        );
        assert!(a.check_known("x", &[]).is_ok());
    }

    #[test]
    fn rejects_malformed_and_unknown() {
        assert_eq!(CniArgs::parse("IP").unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("=v").unwrap_err().code, 4);
        let a = CniArgs::parse("FOO=1;IP=10.0.0.1").unwrap();
        let e = a.check_known("plumb-ipam", &[]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("\"FOO\""), "{}", e.msg);
        assert_eq!(a.get("IP"), Some("10.0.0.1"));
        assert!(CniArgs::parse("IgnoreUnknown=1;FOO=1")
            .unwrap()
            .check_known("x", &[])
            .is_ok());
        assert!(CniArgs::parse("").unwrap().get("IP").is_none());
    }
}
