"""A compact JSON schema for KubeRay ``ray.io/v1`` RayJob / RayCluster manifests, for tests/test_cluster_configs.py.

No KubeRay CRD is installed here, so the fields are written out from KubeRay's Go API types:
  ray-project/kuberay ray-operator/apis/ray/v1/rayjob_types.go      (RayJobSpec, JobSubmissionMode, DeletionStrategy,
                                                                       SubmitterConfig)
  ray-project/kuberay ray-operator/apis/ray/v1/raycluster_types.go  (RayClusterSpec, HeadGroupSpec, WorkerGroupSpec,
                                                                       AutoscalerOptions, ScaleStrategy)
and, for the pod template, Kubernetes core/v1 (PodTemplateSpec, PodSpec, Container, ResourceRequirements,
ContainerPort, Toleration, VolumeMount). ``SidecarMode`` is the submission mode added after v1.3.

Every object modelled here has ``additionalProperties: false`` so a typo'd key (``entrypont``,
``workerGroupSpec``) is an error naming its path; objects not modelled (affinity, probes, volume sources, the
head Service) are left open. ``rayStartParams`` is ``map[string]string`` in the Go types: a YAML number or bool
there (``num-gpus: 0``) is rejected by the API server, so it is rejected here too.
"""

from __future__ import annotations

from typing import Any

import jsonschema

INT = {"type": "integer"}
BOOL = {"type": "boolean"}
STR = {"type": "string"}
OPEN = {"type": "object"}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
QUANTITY = {"type": ["string", "integer", "number"]}


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


OBJECT_META = _obj(
    {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": STR,
        "generateName": STR,
        "labels": STR_MAP,
        "annotations": STR_MAP,
    }
)

RESOURCES = _obj(
    {
        "limits": {"type": "object", "additionalProperties": QUANTITY},
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "claims": {"type": "array"},
    }
)

CONTAINER_PORT = _obj(
    {
        "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
        "hostIP": STR,
        "hostPort": INT,
        "name": {"type": "string", "maxLength": 15},
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
    },
    required=("containerPort",),
)

VOLUME_MOUNT = _obj(
    {
        "name": STR,
        "mountPath": STR,
        "readOnly": BOOL,
        "subPath": STR,
        "subPathExpr": STR,
        "mountPropagation": STR,
        "recursiveReadOnly": STR,
    },
    required=("name", "mountPath"),
)

CONTAINER = _obj(
    {
        "name": STR,
        "image": STR,
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "command": {"type": "array", "items": STR},
        "args": {"type": "array", "items": STR},
        "workingDir": STR,
        "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "envFrom": {"type": "array"},
        "ports": {"type": "array", "items": CONTAINER_PORT},
        "resources": RESOURCES,
        "resizePolicy": {"type": "array"},
        "restartPolicy": STR,
        "volumeMounts": {"type": "array", "items": VOLUME_MOUNT},
        "volumeDevices": {"type": "array"},
        "lifecycle": OPEN,
        "livenessProbe": OPEN,
        "readinessProbe": OPEN,
        "startupProbe": OPEN,
        "securityContext": OPEN,
        "stdin": BOOL,
        "stdinOnce": BOOL,
        "tty": BOOL,
        "terminationMessagePath": STR,
        "terminationMessagePolicy": STR,
    },
    required=("name", "image"),
)

TOLERATION = _obj(
    {
        "key": STR,
        "operator": {"enum": ["Exists", "Equal"]},
        "value": STR,
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": INT,
    }
)

VOLUME = {"type": "object", "required": ["name"], "properties": {"name": STR}}  # the source (emptyDir, ...) is open

POD_SPEC = _obj(
    {
        "containers": {"type": "array", "items": CONTAINER, "minItems": 1},
        "initContainers": {"type": "array", "items": CONTAINER},
        "ephemeralContainers": {"type": "array"},
        "volumes": {"type": "array", "items": VOLUME},
        "tolerations": {"type": "array", "items": TOLERATION},
        "nodeSelector": STR_MAP,
        "affinity": OPEN,
        "topologySpreadConstraints": {"type": "array"},
        "serviceAccountName": STR,
        "serviceAccount": STR,
        "automountServiceAccountToken": BOOL,
        "imagePullSecrets": {"type": "array"},
        "securityContext": OPEN,
        "priorityClassName": STR,
        "priority": INT,
        "preemptionPolicy": STR,
        "runtimeClassName": STR,
        "schedulerName": STR,
        "schedulingGates": {"type": "array"},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
        "terminationGracePeriodSeconds": INT,
        "activeDeadlineSeconds": INT,
        "dnsPolicy": STR,
        "dnsConfig": OPEN,
        "hostNetwork": BOOL,
        "hostIPC": BOOL,
        "hostPID": BOOL,
        "hostUsers": BOOL,
        "hostAliases": {"type": "array"},
        "hostname": STR,
        "subdomain": STR,
        "setHostnameAsFQDN": BOOL,
        "shareProcessNamespace": BOOL,
        "enableServiceLinks": BOOL,
        "nodeName": STR,
        "os": OPEN,
        "overhead": OPEN,
        "readinessGates": {"type": "array"},
        "resourceClaims": {"type": "array"},
        "resources": RESOURCES,
    },
    required=("containers",),
)

POD_TEMPLATE = _obj({"metadata": OBJECT_META, "spec": POD_SPEC}, required=("spec",))

HEAD_GROUP_SPEC = _obj(
    {
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
        "headService": OPEN,
        "enableIngress": BOOL,
        "rayStartParams": STR_MAP,
        "template": POD_TEMPLATE,
    },
    required=("template",),
)

WORKER_GROUP_SPEC = _obj(
    {
        "groupName": STR,
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "idleTimeoutSeconds": INT,
        "suspend": BOOL,
        "rayStartParams": STR_MAP,
        "template": POD_TEMPLATE,
        "scaleStrategy": _obj(
            {"workersToDelete": {"type": "array", "items": STR}, "multihostReplicasToDelete": {"type": "array"}}
        ),
    },
    required=("groupName", "template"),
)

RAY_CLUSTER_SPEC = _obj(
    {
        "headGroupSpec": HEAD_GROUP_SPEC,
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP_SPEC},
        "rayVersion": STR,
        "enableInTreeAutoscaling": BOOL,
        "autoscalerOptions": _obj(
            {
                "resources": RESOURCES,
                "image": STR,
                "imagePullPolicy": STR,
                "env": {"type": "array"},
                "envFrom": {"type": "array"},
                "volumeMounts": {"type": "array"},
                "securityContext": OPEN,
                "idleTimeoutSeconds": INT,
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                "version": {"enum": ["v1", "v2"]},
            }
        ),
        "headServiceAnnotations": STR_MAP,
        "gcsFaultToleranceOptions": OPEN,
        "managedBy": STR,
        "suspend": BOOL,
    },
    required=("headGroupSpec",),
)

_DELETION_POLICY = _obj({"policy": {"enum": ["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"]}})

RAY_JOB_SPEC = _obj(
    {
        "entrypoint": STR,
        "runtimeEnvYAML": STR,
        "jobId": STR,
        "metadata": STR_MAP,
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "entrypointResources": STR,
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "shutdownAfterJobFinishes": BOOL,
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        "backoffLimit": {"type": "integer", "minimum": 0},
        "suspend": BOOL,
        "schedule": STR,
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "clusterSelector": STR_MAP,
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": POD_TEMPLATE,
        "submitterConfig": _obj({"backoffLimit": INT}),
        "deletionStrategy": _obj({"onSuccess": _DELETION_POLICY, "onFailure": _DELETION_POLICY}),
    },
    # A RayJob either brings its own cluster or selects a running one (rayjob_types.go: ClusterSelector).
)
RAY_JOB_SPEC["oneOf"] = [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}]

SCHEMAS = {
    "RayJob": _obj(
        {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": "RayJob"},
            "metadata": OBJECT_META,
            "spec": RAY_JOB_SPEC,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    ),
    "RayCluster": _obj(
        {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": "RayCluster"},
            "metadata": OBJECT_META,
            "spec": RAY_CLUSTER_SPEC,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    ),
}


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Every violation as 'dotted.key.path: message'; an unknown key is reported at its own path."""
    out: list[str] = []
    for e in jsonschema.Draft7Validator(schema).iter_errors(instance):
        path = ".".join(str(p) for p in e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set(e.schema.get("properties", {}))
            for key in sorted(set(e.instance) - known):
                out.append(f"{path + '.' if path else ''}{key}: unknown key (allowed: {', '.join(sorted(known))})")
        else:
            out.append(f"{path or '<top>'}: {e.message}")
    return sorted(out)


def kuberay_errors(doc: Any) -> list[str]:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in SCHEMAS:
        return [f"kind: {kind!r} is not one of {sorted(SCHEMAS)}"]
    return schema_errors(doc, SCHEMAS[kind])
