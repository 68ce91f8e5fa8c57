//! Python deployments: a Ray Serve user's own application, run by Photon without Ray.
//!
//! - [`embedded`]: Photon's Python package (the `ray.serve` API users import, and
//!   `photon_worker`), compiled into the binary and written out at run time.
//! - [`env`]: `runtime_env.pip` environments, made once per requirement list in the cache.
//! - [`discover`]: the controller's view of an application's code (its deployments, their code
//!   options, the ingress), learned from a short-lived Python import; [`PythonCatalog`].
//! - [`package`]: code directories named by their place in the cache, fetched by replicas on
//!   other machines from the controller.
//! - [`worker`]: the replica side: a [`PythonDeployment`] runs the user's code in one Python
//!   worker process per replica, over [`frame`]s on a Unix socket.

#![warn(missing_docs)]

pub mod discover;
pub mod embedded;
pub mod env;
pub mod frame;
pub mod package;
pub mod worker;

pub use discover::{CodeSpec, PythonCatalog, CODE_ENV, GRPC_SERVICERS_ENV};
pub use worker::{PythonDeployment, WorkerSpec};
