"""A session's disk limit (cubbi-create --disk SIZE): the engine's
--storage-opt size=SIZE on the container's writable layer.  Reads no
settings; the caller hands in the engine's /info.

Whether the engine can enforce it depends on its storage driver (docker
info: Storage Driver, Backing Filesystem):

  overlay2                        only when the backing filesystem is xfs
                                  mounted with the pquota option (the engine
                                  itself checks pquota when the container is
                                  made)
  btrfs, zfs                      yes (a subvolume / dataset quota)
  devicemapper, windowsfilter     yes
  vfs, aufs, anything else        no

A limit that cannot be enforced is refused with the reason, never dropped
in silence: a session that was asked to stay under 10g and does not would
be worse than no session.
"""

from .errors import CubbiError

ENFORCING = ("btrfs", "zfs", "devicemapper", "windowsfilter")
WHY = {
    "overlay2": "overlay2 limits a container's disk only on xfs mounted with pquota",
}


def refusal(size, driver, backing=None, why=None):
    on = f" on {backing}" if backing else ""
    reason = why or WHY.get(driver) or f"{driver} has no per-container size limit"
    return CubbiError(f"disk limit {size} refused: the engine's storage driver ({driver}{on}) "
                      f"cannot enforce it ({reason}); leave --disk out, or see cubbi-create(1) "
                      "DISK LIMIT")


def check(info, size):
    """The engine's StorageOpt size for SIZE, or CubbiError saying why this
    engine cannot enforce it.  info: the engine's GET /info."""
    driver = (info or {}).get("Driver") or "unknown"
    status = {k: v for k, v in ((info or {}).get("DriverStatus") or []) if isinstance(k, str)}
    backing = status.get("Backing Filesystem")
    if driver == "overlay2":
        if backing != "xfs":
            raise refusal(size, driver, backing)
    elif driver not in ENFORCING:
        raise refusal(size, driver, backing)
    return str(size)


def engine_refusal(size, info, message):
    """The engine's own refusal at create (e.g. xfs without pquota) as our one line."""
    driver = (info or {}).get("Driver") or "unknown"
    return refusal(size, driver, None, why=str(message).strip().rstrip("."))


def is_refusal(message):
    low = str(message).lower()
    return "storage-opt" in low or "storage opt" in low or "quota" in low
