//! What attribute generators produce: the `kubernetes` template's output
//! (`adapter_template_kubernetes.output.*`, written `$out.<field>` in an instance's
//! `attributeBindings`). Fields left empty are unset, so a binding's default applies.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use expr_lang::{StringMapRef, Value};

/// What a `kubernetes` generator found about one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAttributes {
    /// `kubernetes://<name>.<namespace>`.
    pub pod_uid: String,
    pub pod_ip: Option<IpAddr>,
    pub pod_name: String,
    /// Shared with the cache the pod came from; empty means unset.
    pub labels: Arc<BTreeMap<String, String>>,
    pub namespace: String,
    pub service_account_name: String,
    pub host_ip: Option<IpAddr>,
    /// `istio://<namespace>/workloads/<name>`.
    pub workload_uid: String,
    pub workload_name: String,
    pub workload_namespace: String,
    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kind>s/<name>` of the root owner.
    pub owner: String,
}

/// The `kubernetes` template's output: the source and destination pods, when found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesOutput {
    pub source: Option<PodAttributes>,
    pub destination: Option<PodAttributes>,
    /// The destination container declaring the request's destination port.
    pub destination_container_name: String,
}

fn text(s: &str) -> Option<Value<'_>> {
    (!s.is_empty()).then_some(Value::String(Cow::Borrowed(s)))
}

fn ip(a: Option<IpAddr>) -> Option<Value<'static>> {
    let bytes = match a? {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    Some(Value::IpAddress(Cow::Owned(bytes)))
}

impl PodAttributes {
    /// The value of output field `field` (without the `source_`/`destination_` prefix).
    fn field(&self, field: &str) -> Option<Value<'_>> {
        match field {
            "pod_uid" => text(&self.pod_uid),
            "pod_ip" => ip(self.pod_ip),
            "pod_name" => text(&self.pod_name),
            "labels" => (!self.labels.is_empty())
                .then(|| Value::StringMap(StringMapRef::Borrowed(&*self.labels))),
            "namespace" => text(&self.namespace),
            "service_account_name" => text(&self.service_account_name),
            "host_ip" => ip(self.host_ip),
            "workload_uid" => text(&self.workload_uid),
            "workload_name" => text(&self.workload_name),
            "workload_namespace" => text(&self.workload_namespace),
            "owner" => text(&self.owner),
            _ => None,
        }
    }
}

impl KubernetesOutput {
    /// The value of output field `name` (`source_labels`, `destination_pod_ip`, …);
    /// `None` when unset.
    pub fn field(&self, name: &str) -> Option<Value<'_>> {
        if name == "destination_container_name" {
            return text(&self.destination_container_name);
        }
        if let Some(f) = name.strip_prefix("source_") {
            return self.source.as_ref()?.field(f);
        }
        self.destination
            .as_ref()?
            .field(name.strip_prefix("destination_")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::TemplateKind;

    #[test]
    fn every_declared_output_is_readable() {
        let pod = PodAttributes {
            pod_uid: "kubernetes://a.ns".into(),
            pod_ip: Some([10, 0, 0, 1].into()),
            pod_name: "a".into(),
            labels: Arc::new(BTreeMap::from([("app".into(), "x".into())])),
            namespace: "ns".into(),
            service_account_name: "sa".into(),
            host_ip: Some("fd00::1".parse().unwrap()),
            workload_uid: "istio://ns/workloads/w".into(),
            workload_name: "w".into(),
            workload_namespace: "ns".into(),
            owner: "kubernetes://apis/apps/v1/namespaces/ns/deployments/w".into(),
        };
        let out = KubernetesOutput {
            source: Some(pod.clone()),
            destination: Some(pod),
            destination_container_name: "c".into(),
        };
        for (name, ty) in TemplateKind::Kubernetes.outputs() {
            let v = out.field(name).unwrap_or_else(|| panic!("{name} unset"));
            assert_eq!(v.value_type(), *ty, "{name}");
        }
        assert_eq!(
            out.field("destination_host_ip"),
            Some(Value::IpAddress(Cow::Owned(
                "fd00::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
                    .to_vec()
            )))
        );
        let empty = KubernetesOutput::default();
        assert!(
            TemplateKind::Kubernetes
                .outputs()
                .iter()
                .all(|(n, _)| empty.field(n).is_none())
        );
        assert_eq!(out.field("source_nothing"), None);
    }
}
