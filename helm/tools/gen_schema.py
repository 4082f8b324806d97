#!/usr/bin/env python3
"""Writes helm/sneakernet/values.schema.json. The schema is written as Python for its shared
pieces (durations, secret refs, one block per role); the JSON file is what Helm reads and what
is committed. Run after changing values.yaml: python3 helm/tools/gen_schema.py
(helm/ci.sh fails when the committed file differs from what this prints)."""

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parent.parent / "sneakernet" / "values.schema.json"


def obj(properties, required=(), **extra):
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


STRING = {"type": "string"}
BOOL = {"type": "boolean"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
NAME = {"type": "string", "pattern": "^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
KEY = {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$"}
# humantime, as the services parse it: "90s", "15m", "30days", "1h 30m".
DURATION = {"type": "string", "pattern": "^([0-9]+ ?[a-zA-Z]+ ?)+$"}
COUNT = {"type": "integer", "minimum": 1}
ANY_OBJECT = {"type": "object"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LIST_OF_OBJECTS = {"type": "array", "items": {"type": "object"}}
QUANTITY = {"type": ["string", "integer"], "pattern": "^[0-9]+(\\.[0-9]+)?([EPTGMK]i?|[mkun])?$"}
RESOURCES = obj(
    {
        "requests": obj({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY}),
        "limits": obj({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY}),
    }
)
PDB = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "maxUnavailable": {"type": ["integer", "string"], "minimum": 0, "pattern": "^[0-9]+%$"},
        "minAvailable": {"type": ["integer", "string"], "minimum": 0, "pattern": "^[0-9]+%$"},
    },
    "minProperties": 1,
    "maxProperties": 1,
}
SERVICE = obj(
    {
        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "annotations": STRING_MAP,
    },
    required=["type"],
)
AUTOSCALING = obj(
    {
        "enabled": BOOL,
        "minReplicas": COUNT,
        "maxReplicas": COUNT,
        "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
    },
    required=["enabled", "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"],
)


def role(extra=None, replicas_max=None):
    props = {
        "replicas": {"type": "integer", "minimum": 0},
        "resources": RESOURCES,
        "preStopSleepSeconds": {"type": "integer", "minimum": 1, "maximum": 300},
        "pdb": PDB,
        "service": SERVICE,
        "podAnnotations": STRING_MAP,
        "nodeSelector": STRING_MAP,
        "tolerations": LIST_OF_OBJECTS,
        "affinity": ANY_OBJECT,
    }
    if replicas_max is not None:
        props["replicas"] = dict(props["replicas"], maximum=replicas_max)
    props.update(extra or {})
    return obj(props, required=["replicas", "resources", "preStopSleepSeconds", "pdb", "service"])


def secret_ref(value_key, key_default_name):
    return {
        value_key: STRING,
        "existingSecret": NAME,
        key_default_name: KEY,
    }


CONFIG = obj(
    {
        "log": obj({"format": {"enum": ["pretty", "json"]}, "filter": STRING}),
        "auth": obj(
            {
                "audience": STRING,
                "issuer": STRING,
                "access_token_ttl": DURATION,
                "refresh_token_ttl": DURATION,
                "keys_refresh_interval": DURATION,
                "clock_leeway": DURATION,
            }
        ),
        "rate_limit": obj(
            {
                "attempts_per_account": COUNT,
                "login_per_address": COUNT,
                "register_per_address": COUNT,
                "orders_per_account": COUNT,
                "period": DURATION,
                "trusted_proxies": {"type": "array", "items": {"type": "string", "minLength": 1}},
            }
        ),
        "orders": obj(
            {
                "deposit_minor_units": {"type": "integer", "minimum": 0},
                "deposit_currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "offer_ttl": DURATION,
                "lend_deadline": DURATION,
                "sweep_interval": DURATION,
                "payment_timeout": DURATION,
                "gateway_timeout": DURATION,
                "watch_poll_interval": DURATION,
                "watch_degraded_poll_interval": DURATION,
                "max_watches_per_user": {"type": "integer", "minimum": 1},
            }
        ),
        "gateway": obj(
            {
                "heartbeat_interval": DURATION,
                "offline_after": DURATION,
                "command_poll_interval": DURATION,
                "expiry_sweep_interval": DURATION,
                "liveness_flush_interval": DURATION,
                "reconcile_interval": DURATION,
                "event_retention": DURATION,
                "event_prune_interval": DURATION,
                "link_open_burst": {"type": "integer", "minimum": 1, "maximum": 1000},
                "link_open_every": DURATION,
                "link_message_burst": {"type": "integer", "minimum": 1, "maximum": 1000000},
                "link_messages_per_second": {"type": "integer", "minimum": 1, "maximum": 1000000},
                "max_concurrent_hellos": {"type": "integer", "minimum": 1},
            }
        ),
    },
    description=(
        "Configuration keys of the README's table that the chart does not wire itself, "
        "under their own names; unknown keys are refused as the services refuse them."
    ),
)

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Sneakernet chart values",
    **obj(
        {
            "global": ANY_OBJECT,
            "image": obj(
                {
                    "repository": {"type": "string", "minLength": 1},
                    "tag": STRING,
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                },
                required=["repository", "pullPolicy"],
            ),
            "imagePullSecrets": {
                "type": "array",
                "items": obj({"name": NAME}, required=["name"]),
            },
            "nameOverride": STRING,
            "fullnameOverride": STRING,
            "serviceAccount": obj(
                {"create": BOOL, "name": NAME, "annotations": STRING_MAP}, required=["create"]
            ),
            "database": {
                **obj(
                    {
                        "url": {"type": "string", "pattern": "^$|^postgres(ql)?://"},
                        "existingSecret": NAME,
                        "existingSecretKey": KEY,
                        "schemaPrefix": {"type": "string", "pattern": "^[a-z0-9_]*$"},
                        "maxConnections": COUNT,
                    },
                    required=["maxConnections"],
                ),
                "description": "External Postgres: url or existingSecret is required.",
                "anyOf": [
                    {"properties": {"url": {"minLength": 1}}, "required": ["url"]},
                    {
                        "properties": {"existingSecret": {"minLength": 1}},
                        "required": ["existingSecret"],
                    },
                ],
            },
            "redis": obj(
                {
                    "url": {"type": "string", "pattern": "^$|^rediss?://"},
                    "existingSecret": NAME,
                    "existingSecretKey": KEY,
                }
            ),
            "objectStore": obj(
                {
                    "kind": {"enum": ["local", "s3"]},
                    "local": obj(
                        {
                            "persistence": obj(
                                {
                                    "enabled": BOOL,
                                    "existingClaim": NAME,
                                    "storageClass": STRING,
                                    "size": QUANTITY,
                                },
                                required=["enabled"],
                            )
                        }
                    ),
                    "s3": obj(
                        {
                            "bucket": STRING,
                            "region": {"type": "string", "minLength": 1},
                            "endpoint": {"type": "string", "pattern": "^$|^https?://"},
                            "allowHttp": BOOL,
                            "virtualHostedStyle": BOOL,
                            "existingSecret": NAME,
                            "accessKeyIdKey": KEY,
                            "secretAccessKeyKey": KEY,
                            "accessKeyId": STRING,
                            "secretAccessKey": STRING,
                        }
                    ),
                },
                required=["kind"],
                # An S3 store needs its bucket.
                **{
                    "if": {"properties": {"kind": {"const": "s3"}}},
                    "then": {
                        "properties": {
                            "s3": {"properties": {"bucket": {"minLength": 1}}, "required": ["bucket"]}
                        },
                        "required": ["s3"],
                    },
                },
            ),
            "tls": obj(
                {
                    "enabled": BOOL,
                    "existingSecret": NAME,
                    "caBundle": obj({"existingSecret": NAME, "key": KEY}),
                },
                required=["enabled"],
            ),
            "bootstrapOperator": obj(
                {
                    "email": {"type": "string", "pattern": "^$|^[^@\\s]+@[^@\\s]+$"},
                    **secret_ref("password", "existingSecretKey"),
                }
            ),
            "ordersServiceCredential": obj({"existingSecret": NAME, "key": KEY}, required=["key"]),
            "ordersSecretKey": obj({"existingSecret": NAME, "key": KEY}, required=["key"]),
            "metrics": obj(
                {
                    "enabled": BOOL,
                    "port": PORT,
                    "serviceMonitor": obj(
                        {"enabled": BOOL, "interval": DURATION, "labels": STRING_MAP}
                    ),
                },
                required=["enabled", "port"],
            ),
            "config": CONFIG,
            "grpcPort": PORT,
            "shutdownGraceSeconds": {"type": "integer", "minimum": 1, "maximum": 600},
            "podSecurityContext": ANY_OBJECT,
            "containerSecurityContext": ANY_OBJECT,
            "migration": obj(
                {
                    "enabled": BOOL,
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "activeDeadlineSeconds": COUNT,
                    "resources": RESOURCES,
                },
                required=["enabled"],
            ),
            "roles": obj(
                {
                    "auth": role(),
                    "orders": role({"autoscaling": AUTOSCALING}),
                    "content": role(),
                    "gateway": role(
                        {
                            "autoscaling": AUTOSCALING,
                            "kioskService": obj(
                                {
                                    "enabled": BOOL,
                                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                                    "annotations": STRING_MAP,
                                    "loadBalancerSourceRanges": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                    },
                                },
                                required=["enabled", "type"],
                            ),
                            "topologySpread": obj(
                                {
                                    "enabled": BOOL,
                                    "maxSkew": COUNT,
                                    "whenUnsatisfiable": {
                                        "enum": ["ScheduleAnyway", "DoNotSchedule"]
                                    },
                                },
                                required=["enabled"],
                            ),
                        }
                    ),
                },
                required=["auth", "orders", "content", "gateway"],
            ),
            "ingress": obj(
                {
                    "enabled": BOOL,
                    "className": STRING,
                    "annotations": STRING_MAP,
                    "host": {"type": "string", "minLength": 1},
                    "tls": {
                        "type": "array",
                        "items": obj(
                            {"secretName": NAME, "hosts": {"type": "array", "items": STRING}}
                        ),
                    },
                },
                required=["enabled"],
            ),
            "networkPolicy": obj(
                {
                    "enabled": BOOL,
                    "kiosks": LIST_OF_OBJECTS,
                    "clients": LIST_OF_OBJECTS,
                    "metrics": LIST_OF_OBJECTS,
                },
                required=["enabled"],
            ),
        },
        required=[
            "image",
            "database",
            "objectStore",
            "tls",
            "config",
            "grpcPort",
            "shutdownGraceSeconds",
            "roles",
            "metrics",
            "migration",
        ],
    ),
}


def main():
    text = json.dumps(SCHEMA, indent=2) + "\n"
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is not what {__file__} writes: run it and commit the result")
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
