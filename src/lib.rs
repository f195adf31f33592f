pub mod config;
pub mod error;
pub mod ring;
pub mod store;
pub mod version;
