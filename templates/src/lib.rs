//! Template kinds: the shape of the data handed to adapters (`metric`, `logentry`,
//! `quota`, `listentry`, ...), how instance params compile to expressions, and the
//! handler traits each kind dispatches to.

pub mod builder;
pub mod handler;
pub mod instances;
pub mod kinds;
pub mod outputs;

pub use builder::{Binding, BuildError, InstanceBuilder, OUTPUT_PREFIX, ParamError};
pub use handler::{
    CheckReply, CheckResult, DirectHttpResponse, Handler, HandlerError, QuotaArgs, QuotaBudget,
    QuotaReply, QuotaResult, Reply, Status, code,
};
pub use instances::Dims;
pub use kinds::{TemplateKind, Variety};
pub use outputs::{KubernetesOutput, PodAttributes};
