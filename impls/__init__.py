"""Backend registry: every implementation the harness can run, by name.

The harness reaches torch, triton and jax only through the objects returned by
``get(name)``.  Modules are imported lazily, so listing backends never imports a
framework that is not installed.  Adding one of ours is one new module (exposing
``make_backend(name, **options)``) and one line below; a backend from outside the package
is added with ``register`` (docs/design.md "Backends from outside the package"): by an installed
package's entry point in the group ``rnnbench.backends``, or by a module named with
``--plugin MODULE`` / ``$RNNBENCH_PLUGINS`` whose import calls ``register``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from pathlib import Path

# name -> (kind, module, options passed to the module's make_backend); a registered factory stands
# in the module's place (``register``)
_REGISTRY: dict[str, tuple] = {
    "torch_eager": ("rnn", "impls.torch_eager", {}),
    "torch_cudnn": ("rnn", "impls.torch_cudnn", {}),
    "torch_cudnn_padded": ("rnn", "impls.torch_cudnn", {"ragged": "padded"}),
    "torch_compile": ("rnn", "impls.torch_compile", {}),
    "torch_scan": ("rnn", "impls.torch_scan", {}),
    "torch_scan_compile": ("rnn", "impls.torch_scan", {"compiled": True}),
    "onnxruntime": ("rnn", "impls.onnx_rt", {}),
    "flax_lstm": ("rnn", "impls.flax_cells", {"cell": "lstm"}),
    "flax_gru": ("rnn", "impls.flax_cells", {"cell": "gru"}),
    "flax_rnn": ("rnn", "impls.flax_cells", {"cell": "rnn_tanh"}),
    "flashrnn": ("rnn", "impls.flashrnn_backend", {}),
    "jax_scan": ("rnn", "impls.jax_scan", {"unroll": 1, "bptt": "custom"}),
    "jax_scan_unroll8": ("rnn", "impls.jax_scan", {"unroll": 8, "bptt": "custom"}),
    "jax_scan_autodiff": ("rnn", "impls.jax_scan", {"unroll": 1, "bptt": "autodiff"}),
    "jax_minscan": ("rnn", "impls.jax_minscan", {"form": "sequential"}),
    "jax_minscan_assoc": ("rnn", "impls.jax_minscan", {"form": "associative"}),
    "triton": ("rnn", "impls.triton", {"path": "fused"}),
    "triton_stepwise": ("rnn", "impls.triton", {"path": "stepwise"}),
    "triton_wt": ("rnn", "impls.triton", {"path": "fused", "transposed": True, "fast_tanh": True}),
    "triton_minscan": ("rnn", "impls.triton.minscan", {}),
    "transformer_sdpa": ("baseline", "impls.transformer", {"framework": "torch"}),
    "transformer_jax": ("baseline", "impls.transformer", {"framework": "jax"}),
}

KINDS = ("rnn", "baseline")
ENTRY_POINT_GROUP = "rnnbench.backends"
PLUGINS_ENV = "RNNBENCH_PLUGINS"
_CACHE: dict[str, object] = {}
# plugins loaded in this process, in order: module -> {"module", "version", "source", ("path")}
_PLUGINS: dict[str, dict] = {}
_DISCOVERED = False
_DISCOVERING = False  # a plugin being imported registers its backends: recorded once, by load_plugin


class UnknownBackend(KeyError):
    def __str__(self):
        return self.args[0]


class PluginError(ImportError):
    """A plugin named by --plugin, $RNNBENCH_PLUGINS, an entry point or a run.json cannot be loaded."""

    def __str__(self):
        return self.args[0]


def register(name: str, factory, kind: str = "rnn") -> None:
    """Add a backend: ``factory()`` returns the Backend (``impls.runner.Backend``), made on first use.

    A name of ours cannot be replaced; registering the same factory twice is harmless (a plugin
    imported again in a child)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not callable(factory):
        raise TypeError(f"register({name!r}, factory): factory must be callable, got {type(factory).__name__}")
    old = _REGISTRY.get(name)
    if old is not None and not (callable(old[1]) and _same_factory(old[1], factory)):
        raise ValueError(f"backend {name!r} is already registered (by {module_of(name)})")
    _REGISTRY[name] = (kind, factory, {})
    _CACHE.pop(name, None)
    module = getattr(factory, "__module__", None)
    if module and module != "__main__" and module.split(".")[0] not in ("impls", "rnnbench") \
            and module not in _PLUGINS and not _DISCOVERING:
        _record_plugin(importlib.import_module(module), module)  # children import it as this process did


def portable(name: str) -> tuple[bool, str]:
    """(ok, reason): whether another process can register ``name`` too (False for a backend that a
    script registered from its own ``__main__``, which a child cannot import without running it)."""
    _check(name)
    target = _REGISTRY[name][1]
    if callable(target) and getattr(target, "__module__", None) == "__main__":
        return False, (f"backend {name!r} is registered by the script itself (__main__), which another process "
                       "cannot import without running it: move the backend into a module of its own and pass "
                       "--plugin MODULE (or import it before registering)")
    return True, ""


def _same_factory(a, b) -> bool:
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def names(kind: str | None = None) -> list[str]:
    """Registered backend names, optionally only those of one kind (``rnn`` | ``baseline``)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    discover()
    return [n for n, (k, _, _) in _REGISTRY.items() if kind is None or k == kind]


def kind_of(name: str) -> str:
    _check(name)
    return _REGISTRY[name][0]


def module_of(name: str) -> str:
    """The module that implements ``name``: registered names sharing one are variants of one model."""
    _check(name)
    target = _REGISTRY[name][1]
    return target.__module__ if callable(target) else target


def _check(name: str) -> None:
    if name not in _REGISTRY:
        discover()
    if name not in _REGISTRY:
        raise UnknownBackend(f"unknown backend {name!r}; valid: {', '.join(_REGISTRY)}")


def get(name: str):
    """The backend object: ``name``, ``framework``, ``available(device)``, ``build(spec, weights, device, dtype)``."""
    _check(name)
    if name not in _CACHE:
        kind, target, options = _REGISTRY[name]
        backend = target() if callable(target) else importlib.import_module(target).make_backend(name, **options)
        backend.kind = kind
        _CACHE[name] = backend
    return _CACHE[name]


def available(name: str, device: str = "cpu") -> tuple[bool, str]:
    """(ok, reason): False with the reason when the framework or the device is missing."""
    _check(name)
    try:
        backend = get(name)
    except ImportError as exc:  # the framework itself is not installed
        return False, f"cannot import: {exc}"
    return backend.available(device)


# -- plugins: backends from outside the package ----------------------------------------------


def discover() -> None:
    """Once per process: the installed packages' entry points, then the modules of $RNNBENCH_PLUGINS
    (which every process the suite starts inherits, so children see the parent's backends)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            _register_entry_point(ep)
    for plugin in plugins_from_env():
        load_plugin(plugin)


def _register_entry_point(ep) -> None:
    """``name = "module:factory"``: the factory is loaded on first use; its object's ``kind`` (default rnn)."""
    dist = getattr(ep, "dist", None)
    _PLUGINS.setdefault(ep.module, {"module": ep.module, "version": dist.version if dist else None,
                                    "source": "entry_point", "distribution": dist.name if dist else None})

    def factory():
        try:
            return ep.load()()
        except ImportError as exc:
            raise PluginError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) cannot be imported: {exc}") from None

    factory.__module__, factory.__qualname__ = ep.module, ep.attr
    _REGISTRY[ep.name] = ("rnn", factory, {})


def plugins_from_env() -> list[str]:
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


def load_plugin(plugin: str) -> dict:
    """Import a plugin (a module name, or a path to a ``.py`` file): its import calls ``register``.

    It is added to $RNNBENCH_PLUGINS (and a file's folder to PYTHONPATH), so every process the
    suite starts from here loads it too.  Returns what run.json records of it."""
    path = Path(plugin)
    if plugin.endswith(".py"):
        try:
            is_file = path.is_file()
        except OSError as exc:  # a name too long for the file system
            raise PluginError(f"--plugin {plugin[:60]!r}: {exc.strerror}") from None
        if not is_file:
            raise PluginError(f"--plugin {plugin}: no such file")
        folder, module = str(path.resolve().parent), path.stem
        _add_to_path(folder)
    else:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", plugin):
            raise PluginError(f"--plugin {plugin[:60]!r}: not a module name (dotted Python identifiers) nor a path "
                              "to a .py file")
        module, folder = plugin, None
        if len(module) > 255:  # no file system holds such a name
            raise PluginError(f"--plugin {plugin[:60]!r}...: a module name of {len(module)} characters")
        if "" not in sys.path and os.getcwd() not in sys.path and (Path.cwd() / f"{module.split('.')[0]}.py").exists():
            _add_to_path(os.getcwd())  # `python -m` has the working folder on the path; a console script has not
    if module in _PLUGINS and _PLUGINS[module]["source"] == "plugin":
        return _PLUGINS[module]
    global _DISCOVERING
    _DISCOVERING = True
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(f"plugin {plugin!r} cannot be imported ({exc}); give an importable module name or a "
                          f"path to a .py file") from None
    except Exception as exc:  # noqa: BLE001 - the plugin's own code failed while importing: one line, its error
        raise PluginError(f"plugin {plugin!r} failed while importing: {type(exc).__name__}: {exc}") from None
    finally:
        _DISCOVERING = False
    return _record_plugin(mod, module, str(path.resolve()) if folder else module)


def _record_plugin(mod, module: str, exported: str | None = None) -> dict:
    """Note a plugin module for run.json and export it in $RNNBENCH_PLUGINS to every child process."""
    info = {"module": module, "version": _version_of(mod), "source": "plugin"}
    if getattr(mod, "__file__", None):
        info["path"] = str(Path(mod.__file__).resolve())
    _PLUGINS[module] = info
    listed = plugins_from_env()
    exported = exported or module
    if exported not in listed and module not in listed:
        if info.get("path") and Path(info["path"]).name != "__init__.py" and "." not in module:
            _add_to_path(str(Path(info["path"]).parent))  # a one-file module found on this process's path
        os.environ[PLUGINS_ENV] = ",".join([*listed, exported])
    return info


def _add_to_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, *parts])


def _version_of(mod) -> str | None:
    version = getattr(mod, "__version__", None)
    if version is None:
        top = mod.__name__.split(".")[0]
        for dist in importlib.metadata.packages_distributions().get(top, []):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return None if version is None else str(version)


def plugins() -> list[dict]:
    """The plugins this process has loaded (run.json's ``plugins``): module, version, source."""
    discover()
    return [dict(p) for p in _PLUGINS.values()]


def load_recorded_plugins(recorded: list[dict], where: str) -> None:
    """A resumed run's plugins, loaded here; PluginError in one line naming the one that is missing."""
    discover()
    for p in recorded:
        if p.get("source") == "entry_point":
            if p["module"] not in _PLUGINS:
                raise PluginError(f"{where}: the run used backends of the installed package "
                                  f"{p.get('distribution') or p['module']} {p.get('version') or ''}".rstrip()
                                  + ", which is not installed here; install it to resume")
            continue
        try:
            load_plugin(p["module"])
        except PluginError as exc:
            path = Path(p.get("path") or "")
            if not (path.is_file() and path.stem == p["module"]):  # a plain file: loaded from where it was
                version = f" {p['version']}" if p.get("version") else ""
                raise PluginError(f"{where}: the run used plugin {p['module']}{version}, which cannot be imported "
                                  f"here; make it importable or pass --plugin {path.name or 'FILE.py'}") from None
            load_plugin(str(path))
