//! Template kinds (metric, logentry, quota, …): instance fields and handler traits.
