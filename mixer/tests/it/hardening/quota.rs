//! Row 17: a negative quota amount used to hand units back.

use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use tonic::Code;

use crate::common::{MIXER, ServerProcess};
use crate::common::{check_request, config_dir, s};

const QUOTA: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      path: request.path | "/"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotahandler, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: requestcount.instance.istio-system
      maxAmount: 50
      validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: charge, namespace: istio-system}
spec:
  actions:
  - handler: quotahandler
    instances: [requestcount]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row17_negative_quota_amounts_are_refused() {
    let dir = config_dir(&[("quota.yaml", QUOTA)]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut c = MixerClient::connect(server.api_url()).await.unwrap();
    let attrs = [("request.path", s("/x"))];
    let granted = |amount: i64, dedup: &str| {
        let mut req = check_request(&attrs, &[("requestcount", amount, false)]);
        req.deduplication_id = dedup.to_owned();
        req
    };
    // Use all 50.
    let r = c.check(granted(50, "a")).await.unwrap().into_inner();
    assert_eq!(r.quotas["requestcount"].granted_amount, 50);
    // −50 is refused, naming the quota, and releases nothing.
    let err = c.check(granted(-50, "b")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("\"requestcount\"") && err.message().contains("negative"),
        "{}",
        err.message()
    );
    let r = c.check(granted(50, "c")).await.unwrap().into_inner();
    assert_eq!(
        r.quotas["requestcount"].granted_amount, 0,
        "nothing was released"
    );
}
