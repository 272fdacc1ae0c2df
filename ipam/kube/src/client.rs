//! The Kubernetes client of the admin commands (`reconcile`, `nodes`, `list`/`usage --kubeconfig`).

/// The client settings of the admin commands (`reconcile`, `nodes`, `list`/`usage --kubeconfig`): the
/// kubeconfig at `--kubeconfig`, else inferred ($KUBECONFIG, ~/.kube/config, in-cluster), with kube's
/// own retries off (each command decides what to retry).
pub async fn cli_config(kubeconfig: Option<&str>) -> Result<kube::Config, String> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {path}: cannot read it: {e}"))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {path} is not usable: {e}"))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no --kubeconfig given, and neither $KUBECONFIG, ~/.kube/config nor an in-cluster service account is usable: {e}")
        })?,
    };
    config.default_retry = false;
    Ok(config)
}
