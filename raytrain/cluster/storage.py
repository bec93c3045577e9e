"""Where Ray keeps checkpoints and experiment state: a local folder, a shared filesystem or a cloud URI.

A single machine can use any folder. A multi-node cluster needs storage every node can reach: a cloud URI
(``s3://``, ``gs://``, ...) or a shared filesystem (NFS, EFS, Lustre, ...) mounted at the same path everywhere.
A node-local path on a multi-node cluster would scatter checkpoints over the nodes' disks, so resume and fault
tolerance would silently find nothing; :func:`require_shared_storage` turns that into a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from raytrain.config import ConfigError

# URI schemes pyarrow's filesystem layer (which Ray Train uses) understands.
URI_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs")
# Filesystem types (from /proc/mounts) that are shared between machines.
SHARED_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "glusterfs",
    "fuse.glusterfs", "fuse.cephfs", "fuse.gcsfuse", "fuse.s3fs", "fuse.mountpoint-s3", "fuse.juicefs",
    "fuse.weka", "wekafs", "9p", "virtiofs", "efs", "fuse.sshfs", "panfs", "orangefs", "pvfs2",
})
SHARED_STORAGE_ENV = "RAYTRAIN_SHARED_STORAGE"  # "1": trust that a path is shared where detection can't tell


def is_uri(storage: str) -> bool:
    """True for a cloud/remote URI such as ``s3://bucket/prefix`` (``file://`` counts as a local path)."""
    scheme, sep, _ = storage.partition("://")
    return bool(sep) and scheme.lower() in URI_SCHEMES


def resolve_storage(storage: str | None, default: str | Path) -> str:
    """The storage Ray gets: a URI unchanged, or an absolute local path (Ray needs absolute paths).

    Args:
        storage: the ``storage=`` argument; None uses ``default``.
        default: the folder to use when ``storage`` is None (e.g. the project folder).
    """
    if storage is None:
        return str(Path(default).expanduser().resolve())
    if storage.startswith("file://"):
        storage = storage[len("file://"):]
    if "://" in storage and not is_uri(storage):
        raise ConfigError(f"storage={storage!r}: unsupported URI scheme. Use a path, or one of "
                          f"{', '.join(s + '://' for s in URI_SCHEMES)}.")
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def filesystem_type(path: str | Path, mounts_file: str | Path = "/proc/mounts") -> str | None:
    """The filesystem type of the mount holding ``path`` (longest matching mount point), or None if unknown."""
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    target = str(Path(path).resolve())
    best, best_type = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def cluster_node_ips() -> list[str]:
    """IP addresses of the alive nodes of the connected Ray cluster (one entry per node)."""
    import ray

    return [node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")]


def require_shared_storage(storage: str, node_ips: Sequence[str] | None = None,
                           mounts_file: str | Path = "/proc/mounts") -> None:
    """Raise a ConfigError when a cluster spanning several machines is pointed at a machine-local path.

    Several Ray nodes on one machine (same IP) share its disk, so any path works there. Across machines the
    storage must be a URI or a shared filesystem; set ``RAYTRAIN_SHARED_STORAGE=1`` to vouch for a shared mount
    this check cannot recognise.

    Args:
        storage: resolved storage (URI or absolute path).
        node_ips: IPs of the cluster's alive nodes; default: asked from the connected Ray cluster.
        mounts_file: the mount table to read (a parameter for tests).
    """
    if is_uri(storage) or os.environ.get(SHARED_STORAGE_ENV, "").lower() in ("1", "true", "yes"):
        return
    machines = sorted(set(cluster_node_ips() if node_ips is None else node_ips))
    if len(machines) <= 1:
        return
    fs_type = filesystem_type(storage, mounts_file)
    if fs_type in SHARED_FS_TYPES:
        return
    raise ConfigError(
        f"storage={storage} is on this machine's local disk (filesystem {fs_type or 'unknown'}), but the Ray "
        f"cluster spans {len(machines)} machines ({', '.join(machines)}): checkpoints written there are invisible "
        f"to the other nodes, so resume and failure recovery would break. Use storage=s3://BUCKET/PATH or "
        f"storage=gs://BUCKET/PATH, or a shared filesystem (NFS, EFS, ...) mounted at the same path on every node "
        f"(set {SHARED_STORAGE_ENV}=1 if {storage} already is one)."
    )


def join_storage(root: str, *parts: str) -> str:
    """``root/part/...`` for a path or a URI; a URI's query (``s3://b/p?endpoint_override=...``) stays at the end."""
    if "://" not in root:
        return str(Path(root, *parts))
    base, sep, query = root.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query
