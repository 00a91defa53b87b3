//! Phase 2: the attribute vocabulary is the union of every `attributemanifest`.

use expr_lang::{Manifest, ValueType};

use super::resources::Resources;
use crate::config::diagnostics::{Diags, Res};
use crate::config::spec::{ManifestSpec, decode_spec};

/// The union of the manifests; Istio's standard vocabulary when there is none.
pub(super) fn union(resources: &Resources<'_>, diags: &mut Diags) -> Manifest {
    let mut manifest = Manifest::new();
    let mut manifests = 0;
    for res in resources
        .values()
        .filter(|r| r.doc.kind == "attributemanifest")
    {
        manifests += 1;
        match decode_spec::<ManifestSpec>(&res.doc.spec) {
            Err((field, msg)) => diags.error(res, Some(&field), msg),
            Ok(spec) => declare_all(&mut manifest, res, spec, diags),
        }
    }
    if manifests == 0 {
        diags.global_warning("the configuration has no attributemanifest: expressions are checked against Istio's standard attribute vocabulary");
        return Manifest::istio_vocabulary();
    }
    manifest
}

fn declare_all(manifest: &mut Manifest, res: &Res<'_>, spec: ManifestSpec, diags: &mut Diags) {
    for (name, info) in spec.attributes {
        let field = format!("attributes.{name}.valueType");
        match info.value_type.as_deref().map(ValueType::from_name) {
            Some(Some(t)) if t != ValueType::Unspecified => {
                if let Some(prev) = manifest.value_type(&name)
                    && prev != t
                {
                    diags.error(
                        res,
                        Some(&field),
                        format!(
                            "attribute '{name}' is declared {t} here but {prev} in another manifest"
                        ),
                    );
                    continue;
                }
                manifest.declare(name, t);
            }
            Some(_) => diags.error(
                res,
                Some(&field),
                format!(
                    "unknown value type {:?}; expected one of {}",
                    info.value_type.unwrap_or_default(),
                    ValueType::ALL.map(ValueType::name).join(", ")
                ),
            ),
            None => diags.error(res, Some(&field), "valueType is required"),
        }
    }
}
