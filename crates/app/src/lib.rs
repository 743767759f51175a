//! The IAM service as a program: reads configuration, picks adapters, wires the application
//! services, and serves. The only crate that names concrete adapters.

pub mod settings;
pub mod wiring;

pub use settings::Settings;
pub use wiring::{App, build};
