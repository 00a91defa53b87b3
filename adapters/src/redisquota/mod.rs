//! `redisquota`: quota counters shared across servers in Redis.

pub mod config;
