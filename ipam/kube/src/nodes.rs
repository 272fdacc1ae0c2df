//! `plumb-ipam nodes`: the addresses of the cluster's Nodes, for plumb-vxlan's `peers.fromNodes` (which
//! execs this rather than linking a Kubernetes client itself) and for an operator checking what the
//! VTEPs will flood to. One list request per page, under one deadline.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::Client;
use std::net::IpAddr;
use std::time::Duration;

const USAGE: &str = "usage: plumb-ipam nodes [--kubeconfig PATH] [--address-type TYPE] [--selector LABELS] [--timeout SECONDS] [--json]
  lists each Node with its addresses of TYPE (default InternalIP; also ExternalIP, Hostname, ...),
  Nodes filtered by the label selector LABELS (e.g. plumb.dev/vxlan=true); --json prints
  {\"nodes\":[{\"name\":..,\"addresses\":[..]}]}";

/// One Node and its addresses of the asked type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    /// Node name.
    pub name: String,
    /// Its addresses of the asked type that parse as IP addresses.
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug)]
struct Options {
    kubeconfig: Option<String>,
    address_type: String,
    selector: Option<String>,
    timeout: Duration,
    json: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        kubeconfig: None,
        address_type: "InternalIP".into(),
        selector: None,
        timeout: Duration::from_secs(10),
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--kubeconfig" => o.kubeconfig = Some(value()?),
            "--address-type" => o.address_type = value()?,
            "--selector" => o.selector = Some(value()?).filter(|s| !s.is_empty()),
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=300).contains(s))
                    .ok_or_else(|| format!("--timeout {v} must be 1 to 300 seconds"))?;
                o.timeout = Duration::from_secs(secs);
            }
            "--json" => o.json = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

async fn client(kubeconfig: Option<&str>) -> Result<Client, String> {
    let config = crate::client::cli_config(kubeconfig).await?;
    let url = config.cluster_url.to_string();
    Client::try_from(config)
        .map_err(|e| format!("cannot build the Kubernetes client for {url}: {e}"))
}

/// Lists the Nodes matching `selector` with their addresses of `address_type`, sorted by name.
pub async fn list(
    kubeconfig: Option<&str>,
    address_type: &str,
    selector: Option<&str>,
) -> Result<Vec<NodeAddresses>, String> {
    let nodes: Api<Node> = Api::all(client(kubeconfig).await?);
    let mut lp = ListParams::default().limit(500);
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut out = Vec::new();
    loop {
        let page = nodes
            .list(&lp)
            .await
            .map_err(|e| format!("cannot list Nodes: {e}"))?;
        for n in page.items {
            let addresses = n
                .status
                .and_then(|s| s.addresses)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.type_ == address_type)
                .filter_map(|a| a.address.parse().ok())
                .collect();
            out.push(NodeAddresses {
                name: n.metadata.name.unwrap_or_default(),
                addresses,
            });
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `plumb-ipam nodes ARGS`: returns the exit code (0 listed, 1 failed or timed out, 2 bad usage).
pub fn command(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("plumb-ipam nodes: {e}\n{USAGE}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plumb-ipam nodes: cannot start the client runtime: {e}");
            return 1;
        }
    };
    let listed = rt.block_on(async {
        tokio::time::timeout(
            opts.timeout,
            list(
                opts.kubeconfig.as_deref(),
                &opts.address_type,
                opts.selector.as_deref(),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the Kubernetes API did not answer within {} s",
                opts.timeout.as_secs()
            ))
        })
    });
    match listed {
        Ok(nodes) if opts.json => {
            let v: Vec<_> = nodes
                .iter()
                .map(|n| serde_json::json!({"name": n.name, "addresses": n.addresses}))
                .collect();
            println!("{}", serde_json::json!({ "nodes": v }));
            0
        }
        Ok(nodes) => {
            for n in nodes {
                let a: Vec<String> = n.addresses.iter().map(IpAddr::to_string).collect();
                println!("{}\t{}", n.name, a.join(","));
            }
            0
        }
        Err(e) => {
            eprintln!("plumb-ipam nodes: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let a = |s: &[&str]| parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let o = a(&[
            "--kubeconfig",
            "/k",
            "--selector",
            "a=b",
            "--timeout",
            "3",
            "--json",
        ])
        .unwrap();
        assert_eq!(o.kubeconfig.as_deref(), Some("/k"));
        assert_eq!(o.address_type, "InternalIP");
        assert_eq!(o.selector.as_deref(), Some("a=b"));
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert!(o.json);
        assert!(a(&["--timeout", "0"]).is_err());
        assert!(a(&["--kubeconfig"]).is_err());
        assert!(a(&["--bogus"]).is_err());
    }
}
