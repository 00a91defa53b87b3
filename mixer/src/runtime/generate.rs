//! The ATTRIBUTE_GENERATOR variety: before Check and before each Report record, the
//! matching generator rules run (Istio's `kubernetesenv` filling workload attributes from
//! pods), and their `attributeBindings` overwrite attributes of the bag the rest of the
//! request sees.
//!
//! The generated attributes are an overlay over the decoded bag, not a copy of it.
//! Referenced attributes follow Mixer: a generator's inputs (and whatever its rule's
//! `match` and bindings read) are recorded from the request; reads of generated
//! attributes afterwards are not, since the request did not supply those values. A
//! decision keyed on the recorded attributes is then a function of them (and of the
//! generator's own state, such as the pod cache, as with Mixer's client-side cache).

use std::sync::Arc;

use expr_lang::{AttrKey, Bag, Recorder, Value, ValueType};
use templates::{Binding, InstanceBuilder, KubernetesOutput, OUTPUT_PREFIX, TemplateKind};

use super::failures::{Stage, policy_error};
use super::matching::{count_dispatch, identity_namespace, rule_matches};
use super::{CheckAnswer, CheckError, QuotaRequest, Referenced, Runtime, check};
use crate::config::snapshot::{HandlerEntry, Snapshot};
use crate::metrics::Metrics;

/// One generated attribute.
struct Generated {
    /// The snapshot manifest's id, [`AttrKey::NO_ID`] for an undeclared attribute.
    id: u32,
    name: Arc<str>,
    value: Value<'static>,
}

/// A request's bag with the generated attributes over it.
pub struct GeneratedBag<'b, B: ?Sized> {
    base: &'b B,
    generated: Vec<Generated>,
}

impl<'b, B: Bag + ?Sized> GeneratedBag<'b, B> {
    /// `base` with nothing generated yet.
    fn over(base: &'b B) -> GeneratedBag<'b, B> {
        GeneratedBag {
            base,
            generated: Vec::new(),
        }
    }

    /// Sets (or overwrites) a generated attribute.
    fn set(&mut self, id: u32, name: &Arc<str>, value: Value<'static>) {
        match self.generated.iter_mut().find(|g| *g.name == **name) {
            Some(g) => g.value = value,
            None => self.generated.push(Generated {
                id,
                name: name.clone(),
                value,
            }),
        }
    }

    fn find(&self, key: AttrKey<'_>) -> Option<&Generated> {
        self.generated.iter().find(|g| {
            if key.id != AttrKey::NO_ID && g.id != AttrKey::NO_ID {
                g.id == key.id
            } else {
                *g.name == *key.name
            }
        })
    }

    /// Names of the generated attributes, in the order first set.
    pub fn generated_names(&self) -> impl Iterator<Item = &str> {
        self.generated.iter().map(|g| &*g.name)
    }

    /// A recorder passing to `inner` the reads of attributes the request supplied, and
    /// dropping those of generated attributes.
    pub fn unbound<R: Recorder>(&self, inner: R) -> Unbound<'_, R> {
        Unbound {
            inner,
            generated: &self.generated,
        }
    }
}

impl<B: Bag + ?Sized> Bag for GeneratedBag<'_, B> {
    fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
        match self.find(key) {
            Some(g) => Some(g.value.borrowed()),
            None => self.base.get(key),
        }
    }
}

/// See [`GeneratedBag::unbound`].
pub struct Unbound<'g, R> {
    inner: R,
    generated: &'g [Generated],
}

impl<R> Unbound<'_, R> {
    fn generated(&self, name: &str) -> bool {
        self.generated.iter().any(|g| *g.name == *name)
    }
}

impl<R: Recorder> Recorder for Unbound<'_, R> {
    fn attribute(&mut self, name: &str, value_type: ValueType, present: bool) {
        if !self.generated(name) {
            self.inner.attribute(name, value_type, present);
        }
    }
    fn map_key(&mut self, map: &str, key: &str, present: bool) {
        if !self.generated(map) {
            self.inner.map_key(map, key, present);
        }
    }
}

/// What a binding reads: `$out.<field>` from the generator's output, anything else from
/// the request.
struct WithOutput<'o, B: ?Sized> {
    output: &'o KubernetesOutput,
    base: &'o B,
}

impl<B: Bag + ?Sized> Bag for WithOutput<'_, B> {
    fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
        match key.name.strip_prefix(OUTPUT_PREFIX) {
            Some(field) => self.output.field(field),
            None => self.base.get(key),
        }
    }
}

/// Records a binding's reads of the request, not of the generator's output.
struct RequestReads<'r, R>(&'r mut R);

impl<R: Recorder> Recorder for RequestReads<'_, R> {
    fn attribute(&mut self, name: &str, value_type: ValueType, present: bool) {
        if !name.starts_with(OUTPUT_PREFIX) {
            self.0.attribute(name, value_type, present);
        }
    }
    fn map_key(&mut self, map: &str, key: &str, present: bool) {
        if !map.starts_with(OUTPUT_PREFIX) {
            self.0.map_key(map, key, present);
        }
    }
}

/// Runs the generator rules that apply to `bag` for variety `api` (`check`, `report`),
/// recording what they read of the request into `rec`. With no generator rules (most
/// configurations) nothing is read or allocated.
pub fn run<'b, B: Bag + ?Sized, R: Recorder>(
    snap: &Snapshot,
    bag: &'b B,
    rec: &mut R,
    metrics: &Metrics,
    api: &str,
) -> GeneratedBag<'b, B> {
    let mut out = GeneratedBag::over(bag);
    if snap.generate.is_empty() {
        return out;
    }
    let namespace = identity_namespace(snap, bag, rec);
    for routed in snap.generate.for_namespace(&namespace) {
        let rule = &routed.rule;
        // As for Report: a `match` that cannot be evaluated (counted) does not apply.
        if !rule_matches(rule, bag, rec, metrics, api).unwrap_or(false) {
            continue;
        }
        for dest in &routed.destinations {
            for builder in &dest.instances {
                let output = generate(builder, &dest.handler, bag, rec, metrics, &rule.name, api);
                bind(snap, builder.bindings(), &output, bag, rec, &mut out);
            }
        }
    }
    out
}

/// The generator's output for `builder`'s instance; empty when the instance cannot be
/// built or the handler fails (both counted), so the bindings' defaults apply.
fn generate<B: Bag + ?Sized, R: Recorder>(
    builder: &InstanceBuilder,
    handler: &HandlerEntry,
    bag: &B,
    rec: &mut R,
    metrics: &Metrics,
    rule: &str,
    api: &str,
) -> KubernetesOutput {
    if builder.kind() != TemplateKind::Kubernetes {
        return KubernetesOutput::default();
    }
    let instance = match builder.kubernetes(bag, rec) {
        Ok(i) => i,
        Err(e) => {
            policy_error(metrics, rule, Stage::Instance, api, &e);
            return KubernetesOutput::default();
        }
    };
    let result = match handler.handler.kubernetes() {
        Some(h) => h.generate_kubernetes(&instance),
        None => Err(templates::HandlerError::Internal(format!(
            "handler '{}' does not implement template 'kubernetes'",
            handler.name
        ))),
    };
    count_dispatch(metrics, TemplateKind::Kubernetes, handler, result.is_err());
    result.unwrap_or_else(|e| {
        policy_error(metrics, rule, Stage::Handler, api, &e);
        KubernetesOutput::default()
    })
}

/// Evaluates `bindings` over `output` and the request, setting each attribute whose
/// expression has a value. One that fails (no default for a missing output) leaves the
/// attribute as the request had it.
fn bind<B: Bag + ?Sized, R: Recorder>(
    snap: &Snapshot,
    bindings: &[Binding],
    output: &KubernetesOutput,
    bag: &B,
    rec: &mut R,
    out: &mut GeneratedBag<'_, B>,
) {
    let source = WithOutput { output, base: bag };
    let mut reads = RequestReads(rec);
    for b in bindings {
        match b.program.evaluate_recorded(&source, &mut reads) {
            Ok(v) => {
                let id = snap
                    .manifest
                    .get(&b.attribute)
                    .map_or(AttrKey::NO_ID, |i| i.id);
                let value = v.into_owned();
                out.set(id, &b.attribute, value);
            }
            Err(e) => {
                tracing::debug!(attribute = %b.attribute, error = %e, "Attribute binding has no value; the request's value stays.");
            }
        }
    }
}

impl Runtime {
    /// [`Runtime::check`] when generators are configured: the precondition from the
    /// cache (keyed on what the request supplied), else the generators, then the Check
    /// and the quotas on the generated bag.
    pub(super) async fn check_generated<B: Bag + ?Sized + Sync>(
        &self,
        snapshot: &Snapshot,
        bag: &B,
        deduplication_id: &str,
        quotas: &[QuotaRequest<'_>],
    ) -> Result<CheckAnswer, CheckError> {
        let cache = self.check_cache.as_ref();
        if quotas.is_empty()
            && let Some((precondition, referenced)) = cache.and_then(|c| c.lookup(snapshot, bag))
        {
            return Ok(CheckAnswer {
                precondition,
                referenced,
                quotas: Vec::new(),
            });
        }
        let mut inputs = Referenced::new();
        let generated = run(snapshot, bag, &mut inputs, &self.metrics, "check");
        let cx = check::CheckContext {
            snapshot,
            mode: self.options.policy_errors,
            metrics: &self.metrics,
        };
        let mut referenced = inputs.clone();
        let precondition =
            check::evaluate(&cx, &generated, &mut generated.unbound(&mut referenced)).await?;
        let referenced = Arc::new(referenced);
        if let Some(cache) = cache {
            cache.insert(snapshot, bag, &precondition, &referenced);
        }
        let mut answer = CheckAnswer {
            precondition,
            referenced,
            quotas: Vec::new(),
        };
        if answer.precondition.status.is_ok() {
            for request in quotas {
                let mut q = self
                    .allocate(snapshot, &generated, deduplication_id, *request)
                    .await;
                q.referenced = supplied(&inputs, &q.referenced, &generated);
                answer.quotas.push(q);
            }
        }
        Ok(answer)
    }
}

/// `inputs` (what the generators read) and the references of `read` to attributes the
/// request supplied.
fn supplied<B: ?Sized>(
    inputs: &Referenced,
    read: &Referenced,
    generated: &GeneratedBag<'_, B>,
) -> Referenced {
    let mut out = inputs.clone();
    for r in read {
        if !generated.generated.iter().any(|g| *g.name == *r.name) {
            out.set(r.name, r.map_key, r.condition);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Mutex;

    use expr_lang::MapBag;
    use templates::handler::{KubernetesHandler, MetricHandler};
    use templates::instances::{kubernetes, metric};
    use templates::{Handler, HandlerError, PodAttributes, code};

    use super::*;
    use crate::config::compile::{CompileOptions, compile};
    use crate::config::snapshot::{Destination, RoutedRule};
    use crate::config::store::parse_file;
    use crate::runtime::{Condition, PolicyErrorMode, RuntimeOptions};

    const CONFIG: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: kubernetesenv, namespace: istio-system}
spec: {compiledAdapter: kubernetesenv}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: attributes, namespace: istio-system}
spec:
  compiledTemplate: kubernetes
  params:
    source_uid: source.uid | ""
  attributeBindings:
    source.labels: $out.source_labels | emptyStringMap()
    source.workload.name: $out.source_workload_name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: generate, namespace: istio-system}
spec:
  actions: [{handler: kubernetesenv, instances: [attributes]}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny, namespace: istio-system}
spec:
  compiledAdapter: denier
  params: {status: {code: 7, message: no a}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-a, namespace: istio-system}
spec:
  match: source.labels["app"] == "a"
  actions: [{handler: deny, instances: [nothing]}]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: noop, namespace: istio-system}
spec: {compiledAdapter: noop}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: count, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      workload: source.workload.name | "none"
      app: source.labels["app"] | "none"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: metrics, namespace: istio-system}
spec:
  actions: [{handler: noop, instances: [count]}]
"#;

    /// Knows pod `a` (labelled `app: a`); fails for `boom`.
    struct FakeEnv;

    impl Handler for FakeEnv {
        fn kubernetes(&self) -> Option<&dyn KubernetesHandler> {
            Some(self)
        }
    }

    impl KubernetesHandler for FakeEnv {
        fn generate_kubernetes(
            &self,
            i: &kubernetes::Instance<'_>,
        ) -> Result<KubernetesOutput, HandlerError> {
            match &*i.source_uid {
                "kubernetes://boom.default" => Err(HandlerError::Unavailable("down".into())),
                "kubernetes://a.default" => Ok(KubernetesOutput {
                    source: Some(PodAttributes {
                        labels: Arc::new(BTreeMap::from([("app".into(), "a".into())])),
                        workload_name: "a-workload".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                _ => Ok(KubernetesOutput::default()),
            }
        }
    }

    /// Records each metric's dimensions as text.
    #[derive(Default)]
    struct Capture(Mutex<Vec<Vec<String>>>);

    impl Handler for Capture {
        fn metric(&self) -> Option<&dyn MetricHandler> {
            Some(self)
        }
    }

    impl MetricHandler for Capture {
        fn handle_metric(&self, instances: &[metric::Instance<'_>]) -> Result<(), HandlerError> {
            let mut seen = self.0.lock().unwrap();
            for i in instances {
                seen.push(i.dimensions.iter().map(|(_, v)| v.to_string()).collect());
            }
            Ok(())
        }
    }

    fn entry(name: &str, handler: Arc<dyn Handler>) -> Arc<HandlerEntry> {
        Arc::new(HandlerEntry {
            name: name.to_owned(),
            adapter: "fake",
            handler,
            signature: String::new(),
            dispatch_counters: Default::default(),
        })
    }

    /// The configuration, with [`FakeEnv`] as the generator (the real kubernetesenv has
    /// no cluster here) and metrics going to `capture`.
    fn runtime(capture: Arc<Capture>) -> Runtime {
        let (docs, errors) = parse_file(Path::new("generate.yaml"), CONFIG);
        assert!(errors.is_empty(), "{errors:?}");
        let opts = CompileOptions {
            default_namespace: "istio-system".to_owned(),
            build_handlers: true,
            generation: 1,
            resources: Default::default(),
        };
        let mut snap = compile(&docs, &opts, None).snapshot;
        let rule = snap
            .rules
            .iter()
            .find(|r| r.name == "generate.rule.istio-system")
            .unwrap()
            .clone();
        // Only the fake: a kubernetesenv that found a cluster here must not join it.
        snap.generate = Default::default();
        snap.generate.default.push(RoutedRule {
            rule,
            destinations: vec![Destination {
                handler: entry("fakeenv", Arc::new(FakeEnv)),
                instances: vec![snap.instances["attributes.instance.istio-system"].clone()],
            }],
        });
        snap.report.default[0].destinations[0].handler = entry("capture", capture);
        let runtime = Runtime::new(
            RuntimeOptions {
                config_dirs: Vec::new(),
                resources: Default::default(),
                default_namespace: "istio-system".to_owned(),
                policy_errors: PolicyErrorMode::Mixer,
                check_cache_size: 100,
            },
            Metrics::new(),
        );
        runtime.current.store(Arc::new(snap));
        runtime
    }

    fn bag(uid: &str) -> MapBag {
        MapBag::new().with("source.uid", Value::String(uid.to_owned().into()))
    }

    fn cache_hits(runtime: &Runtime) -> u64 {
        runtime
            .metrics
            .registry
            .gather()
            .iter()
            .find(|f| f.name() == "mixer_check_cache_hits_total")
            .map_or(0, |f| f.get_metric()[0].get_counter().value() as u64)
    }

    #[tokio::test]
    async fn check_decides_on_generated_attributes_and_references_the_inputs() {
        let runtime = runtime(Default::default());
        let snap = runtime.snapshot();
        // The proxy's own labels lose to the generated ones.
        let a = bag("kubernetes://a.default").with(
            "source.labels",
            Value::StringMap(expr_lang::StringMapRef::Owned(Arc::new(BTreeMap::from([
                ("app".to_owned(), "b".to_owned()),
            ])))),
        );
        let answer = runtime.check(&snap, &a, "d", &[]).await.unwrap();
        assert_eq!(answer.precondition.status.code, code::PERMISSION_DENIED);
        let refs: Vec<_> = answer
            .referenced
            .iter()
            .map(|r| (r.name.to_owned(), r.map_key.map(str::to_owned), r.condition))
            .collect();
        assert!(
            refs.contains(&("source.uid".to_owned(), None, Condition::Exact)),
            "{refs:?}"
        );
        assert!(
            refs.iter().all(|(name, _, _)| name != "source.labels"),
            "generated attributes are not the request's: {refs:?}"
        );
        // Keyed on the input: the same pod is answered from the cache, another is not.
        let again = runtime.check(&snap, &a, "d", &[]).await.unwrap();
        assert_eq!(again.precondition.status.code, code::PERMISSION_DENIED);
        assert_eq!(cache_hits(&runtime), 1);
        for other in ["kubernetes://b.default", "kubernetes://boom.default"] {
            let ok = runtime.check(&snap, &bag(other), "d", &[]).await.unwrap();
            assert!(ok.precondition.status.is_ok(), "{other}");
        }
        assert_eq!(cache_hits(&runtime), 1);
    }

    #[test]
    fn report_instances_see_generated_attributes_or_the_bindings_defaults() {
        let capture = Arc::new(Capture::default());
        let runtime = runtime(capture.clone());
        let snap = runtime.snapshot();
        let claimed = |uid: &str| bag(uid).with("source.workload.name", Value::str("claimed"));
        let bags = [
            claimed("kubernetes://a.default"),
            claimed("kubernetes://nobody.default"),
            claimed("kubernetes://boom.default"),
            MapBag::new(),
        ];
        assert_eq!(runtime.report(&snap, &bags), []);
        let seen = capture.0.lock().unwrap().clone();
        let dims = |w: &str, a: &str| vec![w.to_owned(), a.to_owned()];
        assert_eq!(
            seen,
            [
                dims("a-workload", "a"),
                dims("unknown", "none"),
                dims("unknown", "none"),
                dims("unknown", "none"),
            ]
        );
    }

    #[test]
    fn without_generators_the_bag_is_the_request() {
        let capture = Arc::new(Capture::default());
        let runtime = runtime(capture.clone());
        let mut snap = compile(
            &parse_file(Path::new("g.yaml"), CONFIG).0,
            &CompileOptions {
                default_namespace: "istio-system".to_owned(),
                build_handlers: true,
                generation: 2,
                resources: Default::default(),
            },
            None,
        )
        .snapshot;
        snap.generate = Default::default();
        snap.report.default[0].destinations[0].handler = entry("capture", capture.clone());
        let bags =
            [bag("kubernetes://a.default").with("source.workload.name", Value::str("claimed"))];
        assert_eq!(runtime.report(&snap, &bags), []);
        assert_eq!(
            *capture.0.lock().unwrap(),
            [vec!["claimed".to_owned(), "none".to_owned()]]
        );
        let generated = run(
            &snap,
            &bags[0],
            &mut NoRecordingRef,
            &runtime.metrics,
            "check",
        );
        assert_eq!(generated.generated_names().count(), 0);
    }

    /// A recorder for [`run`] that must not be called.
    struct NoRecordingRef;

    impl Recorder for NoRecordingRef {
        fn attribute(&mut self, name: &str, _: ValueType, _: bool) {
            panic!("read {name} without generators");
        }
        fn map_key(&mut self, map: &str, _: &str, _: bool) {
            panic!("read {map} without generators");
        }
    }
}
