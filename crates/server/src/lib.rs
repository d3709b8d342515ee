//! tidegauge's host: the scrape engine and the HTTP router around it.

pub mod access;
pub mod bearer;
pub mod conn;
pub mod deadline;
pub mod engine;
mod landing;
pub mod negotiate;
pub mod process;
pub mod router;
pub mod selector;
pub mod tls;
pub mod webconfig;

pub use access::AccessPolicy;
pub use deadline::{TimeoutSettings, scrape_budget};
pub use engine::{BuildInfo, CollectorSettings, Engine, HostMetrics, Selection};
pub use router::{ReloadFn, SharedEngine, WebSettings, router};
