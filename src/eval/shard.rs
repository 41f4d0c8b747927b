//! Sharding (stub).
