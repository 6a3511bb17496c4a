//! `mesh-shim wait`: polls the readiness URL until it answers 200, so an
//! entrypoint can run `mesh-shim wait && exec app` and the app never
//! starts before the mesh can carry its requests (Istio's
//! `holdApplicationUntilProxyStarts`).

use std::time::Duration;

use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::WaitArgs;

/// Waits; `Ok` once ready, `Err` with what was seen last on timeout.
pub async fn run(args: WaitArgs) -> Result<(), String> {
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|e| format!("--url {:?}: {e}", args.url))?;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1).min(args.timeout),
            client.get(uri.clone()),
        )
        .await;
        let last = match attempt {
            Ok(Ok(r)) if r.status().is_success() => return Ok(()),
            Ok(Ok(r)) => format!("{} answered {}", args.url, r.status()),
            Ok(Err(e)) => format!("{}: {e}", args.url),
            Err(_) => format!("{}: no answer within 1s", args.url),
        };
        if tokio::time::Instant::now() + args.period > deadline {
            return Err(format!(
                "the shim was not ready after {:?}: {last}",
                args.timeout
            ));
        }
        tokio::time::sleep(args.period).await;
    }
}
