//! Real Istio configs (Istio 1.1.17, 1.4.10, 1.6.14, as in `mixer/tests/data/istio-configs`):
//! every prometheus handler's params, and the dimension names of the metric instances of
//! the default Helm configs, copied verbatim.

use serde_json::{Value as Json, json};

/// `(source file (handler name), params)` of every distinct prometheus handler.
pub fn prometheus_params() -> Vec<(&'static str, Json)> {
    vec![
        (
            "1.1.17/install__kubernetes__helm__istio__charts__mixer__templates__config-rendered-with-stdio.yaml (prometheus)",
            // also 1.1.17/install__kubernetes__helm__istio__charts__mixer__templates__config-rendered.yaml (prometheus)
            json!({
                "metricsExpirationPolicy": {"metricsExpiryDuration": "10m"},
                "metrics": [
                    {
                        "name": "requests_total",
                        "instance_name": "requestcount.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ]
                    },
                    {
                        "name": "request_duration_seconds",
                        "instance_name": "requestduration.metric.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ],
                        "buckets": {
                            "explicit_buckets": {
                                "bounds": [
                                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
                                ]
                            }
                        }
                    },
                    {
                        "name": "request_bytes",
                        "instance_name": "requestsize.metric.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "response_bytes",
                        "instance_name": "responsesize.metric.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "tcp_sent_bytes_total",
                        "instance_name": "tcpbytesent.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_received_bytes_total",
                        "instance_name": "tcpbytereceived.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_connections_opened_total",
                        "instance_name": "tcpconnectionsopened.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_connections_closed_total",
                        "instance_name": "tcpconnectionsclosed.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    }
                ]
            }),
        ),
        (
            "1.1.17/mixer__testdata__config__prometheus.yaml (prometheus)",
            // also 1.4.10/mixer__testdata__config__prometheus.yaml (prometheus)
            json!({
                "metrics": [
                    {
                        "name": "requests_total",
                        "instance_name": "requestcount.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "connection_mtls"
                        ]
                    },
                    {
                        "name": "request_duration_seconds",
                        "instance_name": "requestduration.metric.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "connection_mtls"
                        ],
                        "buckets": {
                            "explicit_buckets": {
                                "bounds": [
                                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
                                ]
                            }
                        }
                    },
                    {
                        "name": "request_bytes",
                        "instance_name": "requestsize.metric.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "connection_mtls"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "response_bytes",
                        "instance_name": "responsesize.metric.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "connection_mtls"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "tcp_sent_bytes_total",
                        "instance_name": "tcpbytesent.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_mtls"
                        ]
                    },
                    {
                        "name": "tcp_received_bytes_total",
                        "instance_name": "tcpbytereceived.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_mtls"
                        ]
                    },
                    {
                        "name": "tcp_connections_opened_total",
                        "instance_name": "tcpconnectionsopened.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_mtls"
                        ]
                    },
                    {
                        "name": "tcp_connections_closed_total",
                        "instance_name": "tcpconnectionsclosed.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_namespace", "source_principal",
                            "source_workload", "source_workload_namespace", "source_version",
                            "destination_app", "destination_namespace",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_mtls"
                        ]
                    }
                ]
            }),
        ),
        (
            "1.1.17/samples__bookinfo__policy__mixer-rule-kubernetesenv-telemetry.yaml (kubeenvhandler)",
            json!({
                "metrics": [
                    {
                        "name": "kube_request_count",
                        "instance_name": "kubeenvrequestcount.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "response_code", "source_pod", "source_workload_uid",
                            "source_workload", "source_owner", "destination_pod",
                            "destination_workload_uid", "destination_workload",
                            "destination_owner", "destination_container"
                        ]
                    }
                ]
            }),
        ),
        (
            "1.1.17/samples__bookinfo__telemetry__metrics-crd.yaml (doublehandler)",
            json!({
                "metrics": [
                    {
                        "name": "double_request_count",
                        "instance_name": "doublerequestcount.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": ["reporter", "source", "destination", "message"]
                    }
                ]
            }),
        ),
        (
            "1.4.10/mixer__adapter__prometheus__prometheus_integration_test.go--requestCountToPromCfg.yaml (handler)",
            json!({
                "metrics": [
                    {
                        "name": "request_count",
                        "instance_name": "requestcount.metric.istio-system",
                        "kind": "COUNTER",
                        "label_names": ["destination_service", "response_code"]
                    }
                ]
            }),
        ),
        (
            "1.4.10/install__kubernetes__helm__istio__charts__mixer__templates__config-rendered-demo.yaml (prometheus)",
            // also 1.4.10/install__kubernetes__helm__istio__charts__mixer__templates__config-rendered.yaml (prometheus)
            json!({
                "metricsExpirationPolicy": {"metricsExpiryDuration": "10m"},
                "metrics": [
                    {
                        "name": "requests_total",
                        "instance_name": "requestcount.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ]
                    },
                    {
                        "name": "request_duration_seconds",
                        "instance_name": "requestduration.instance.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ],
                        "buckets": {
                            "explicit_buckets": {
                                "bounds": [
                                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
                                ]
                            }
                        }
                    },
                    {
                        "name": "request_bytes",
                        "instance_name": "requestsize.instance.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "response_bytes",
                        "instance_name": "responsesize.instance.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "response_flags", "permissive_response_code",
                            "permissive_response_policyid", "connection_security_policy"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "tcp_sent_bytes_total",
                        "instance_name": "tcpbytesent.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_received_bytes_total",
                        "instance_name": "tcpbytereceived.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_connections_opened_total",
                        "instance_name": "tcpconnectionsopened.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_connections_closed_total",
                        "instance_name": "tcpconnectionsclosed.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    }
                ]
            }),
        ),
        (
            "1.4.10/samples__bookinfo__policy__mixer-rule-kubernetesenv-telemetry.yaml (kubeenvhandler)",
            json!({
                "metrics": [
                    {
                        "name": "kube_request_count",
                        "instance_name": "kubeenvrequestcount.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "response_code", "source_pod", "source_workload_uid",
                            "source_workload", "source_owner", "destination_pod",
                            "destination_workload_uid", "destination_workload",
                            "destination_owner", "destination_container"
                        ]
                    }
                ]
            }),
        ),
        (
            "1.4.10/samples__bookinfo__telemetry__metrics-crd.yaml (doublehandler)",
            // also 1.4.10/samples__bookinfo__telemetry__metrics.yaml (doublehandler)
            json!({
                "metrics": [
                    {
                        "name": "double_request_count",
                        "instance_name": "doublerequestcount.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": ["reporter", "source", "destination", "message"]
                    }
                ]
            }),
        ),
        (
            "1.4.10/samples__bookinfo__telemetry__tcp-metrics-crd.yaml (mongohandler)",
            json!({
                "metrics": [
                    {
                        "name": "mongo_sent_bytes",
                        "instance_name": "mongosentbytes.metric.default",
                        "kind": "COUNTER",
                        "label_names": [
                            "source_service", "source_version", "destination_version"
                        ]
                    },
                    {
                        "name": "mongo_received_bytes",
                        "instance_name": "mongoreceivedbytes.metric.default",
                        "kind": "COUNTER",
                        "label_names": [
                            "source_service", "source_version", "destination_version"
                        ]
                    }
                ]
            }),
        ),
        (
            "1.4.10/samples__bookinfo__telemetry__tcp-metrics.yaml (mongohandler)",
            json!({
                "metrics": [
                    {
                        "name": "mongo_sent_bytes",
                        "instance_name": "mongosentbytes.instance.default",
                        "kind": "COUNTER",
                        "label_names": [
                            "source_service", "source_version", "destination_version"
                        ]
                    },
                    {
                        "name": "mongo_received_bytes",
                        "instance_name": "mongoreceivedbytes.instance.default",
                        "kind": "COUNTER",
                        "label_names": [
                            "source_service", "source_version", "destination_version"
                        ]
                    }
                ]
            }),
        ),
        (
            "1.6.14/manifests__charts__istio-telemetry__mixer-telemetry__templates__config-rendered-with-stdio.yaml (prometheus)",
            // also 1.6.14/manifests__charts__istio-telemetry__mixer-telemetry__templates__config-rendered.yaml (prometheus)
            json!({
                "metricsExpirationPolicy": {"metricsExpiryDuration": "10m"},
                "metrics": [
                    {
                        "name": "requests_total",
                        "instance_name": "requestcount.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "grpc_response_status", "response_code", "response_flags",
                            "connection_security_policy"
                        ]
                    },
                    {
                        "name": "request_duration_seconds",
                        "instance_name": "requestduration.instance.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "grpc_response_status", "response_flags",
                            "connection_security_policy"
                        ],
                        "buckets": {
                            "explicit_buckets": {
                                "bounds": [
                                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
                                ]
                            }
                        }
                    },
                    {
                        "name": "request_bytes",
                        "instance_name": "requestsize.instance.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "grpc_response_status", "response_flags",
                            "connection_security_policy"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "response_bytes",
                        "instance_name": "responsesize.instance.istio-system",
                        "kind": "DISTRIBUTION",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "request_protocol",
                            "response_code", "grpc_response_status", "response_flags",
                            "connection_security_policy"
                        ],
                        "buckets": {
                            "exponentialBuckets": {
                                "numFiniteBuckets": 8,
                                "scale": 1,
                                "growthFactor": 10
                            }
                        }
                    },
                    {
                        "name": "tcp_sent_bytes_total",
                        "instance_name": "tcpbytesent.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_received_bytes_total",
                        "instance_name": "tcpbytereceived.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_connections_opened_total",
                        "instance_name": "tcpconnectionsopened.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    },
                    {
                        "name": "tcp_connections_closed_total",
                        "instance_name": "tcpconnectionsclosed.instance.istio-system",
                        "kind": "COUNTER",
                        "label_names": [
                            "reporter", "source_app", "source_principal", "source_workload",
                            "source_workload_namespace", "source_version", "destination_app",
                            "destination_principal", "destination_workload",
                            "destination_workload_namespace", "destination_version",
                            "destination_service", "destination_service_name",
                            "destination_service_namespace", "connection_security_policy",
                            "response_flags"
                        ]
                    }
                ]
            }),
        ),
    ]
}

/// Metric instances of the default config (V1_1): name and dimension names.
pub const DIMS_V1_1: &[(&str, &[&str])] = &[
    (
        "requestcount.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "requestduration.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "requestsize.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "responsesize.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "tcpbytesent.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpbytereceived.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpconnectionsopened.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpconnectionsclosed.metric.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
];

/// Metric instances of the default config (V1_4): name and dimension names.
pub const DIMS_V1_4: &[(&str, &[&str])] = &[
    (
        "requestcount.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "requestduration.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "requestsize.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "responsesize.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "response_flags",
            "permissive_response_code",
            "permissive_response_policyid",
            "connection_security_policy",
        ],
    ),
    (
        "tcpbytesent.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpbytereceived.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpconnectionsopened.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpconnectionsclosed.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
];

/// Metric instances of the default config (V1_6): name and dimension names.
pub const DIMS_V1_6: &[(&str, &[&str])] = &[
    (
        "requestcount.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "grpc_response_status",
            "response_flags",
            "connection_security_policy",
        ],
    ),
    (
        "requestduration.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "grpc_response_status",
            "response_flags",
            "connection_security_policy",
        ],
    ),
    (
        "requestsize.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "grpc_response_status",
            "response_flags",
            "connection_security_policy",
        ],
    ),
    (
        "responsesize.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "grpc_response_status",
            "response_flags",
            "connection_security_policy",
        ],
    ),
    (
        "tcpbytesent.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpbytereceived.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpconnectionsopened.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
    (
        "tcpconnectionsclosed.instance.istio-system",
        &[
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "destination_workload",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "connection_security_policy",
            "response_flags",
        ],
    ),
];
