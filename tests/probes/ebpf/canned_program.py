"""A stand-in for a LoadedProgram in the probes' tests without BPF: its maps are canned contents."""

from __future__ import annotations


class CannedProgram:
    """read() and drain() answer from canned map contents; put(), get() and delete() act on a dictionary
    of entries, and are remembered in `put_keys` (with their values in `put_values`) and `deleted`."""

    def __init__(self, maps: dict[str, list], attached: tuple[str, ...] = ()):
        self.maps = maps
        self.attached = attached
        self.entries: dict[tuple[str, tuple], tuple] = {}
        self.put_keys: list[tuple[str, tuple]] = []
        self.put_values: list[tuple[str, tuple, tuple]] = []
        self.deleted: list[tuple[str, tuple]] = []

    def read(self, name):
        return list(self.maps.get(name, []))

    def drain(self, name):
        return self.maps.pop(name, [])

    def put(self, name, key, value=()):
        self.entries[(name, key)] = value
        self.put_keys.append((name, key))
        self.put_values.append((name, key, value))

    def try_put(self, name, key, value=()):
        self.put(name, key, value)
        return True

    def get(self, name, key):
        value = self.entries.get((name, key))
        return None if value is None else value[0] if len(value) == 1 else value

    def delete(self, name, key):
        self.entries.pop((name, key), None)
        self.deleted.append((name, key))
