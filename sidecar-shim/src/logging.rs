//! The log filter, changeable at run time through the admin port's
//! `/logging?level=...` (any `tracing` filter: `debug`,
//! `mesh::inbound=debug,info`).

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static HANDLE: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// Installs the subscriber (stderr), filter from `MESH_SHIM_LOG` or `info`.
pub fn init() {
    let spec = std::env::var("MESH_SHIM_LOG").unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
    let _ = HANDLE.set(handle);
    remember(&spec);
}

fn remember(spec: &str) {
    if let Ok(mut c) = CURRENT.lock() {
        *c = spec.to_string();
    }
}

/// The filter in force.
pub fn current() -> String {
    CURRENT.lock().map(|c| c.clone()).unwrap_or_default()
}

/// Replaces the filter; a filter that does not parse is refused.
pub fn set(spec: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(spec)
        .map_err(|e| format!("level {spec:?}: {e}; try info, debug or mesh::inbound=debug"))?;
    let handle = HANDLE.get().ok_or("logging is not initialised")?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    remember(spec);
    Ok(())
}
