r"""The compiled fast path: one traced run of model and guide becomes a pure, compiled step.

For a model and guide whose structure does not change between steps, everything Pyro
does in Python (messengers, traces, site bookkeeping) yields the same tensor program
every time. We record that program once, with :func:`torch.fx.experimental.proxy_tensor.make_fx`,
as a graph of ATen operations over explicit inputs,

.. math::

    (\theta\phi,\ x,\ \varepsilon) \;\mapsto\; \big(\mathcal L,\ \nabla_{\theta\phi}\mathcal L\big),

parameters (unconstrained leaves), the model's tensor arguments (data) and the noise
:math:`\varepsilon`, forward and backward in one graph, and hand it to ``torch.compile``.
The noise is lifted out of the graph: the random operations that depend on no input
(``randn``, ``randperm`` of a subsampled plate, ...) run eagerly before each call, in
the order the eager engine would run them, so with the same RNG state the compiled
step sees the same draws as the eager one. Random operations that do depend on the
parameters (e.g. the gamma draws of a reparameterised Dirichlet guide) stay in the graph.

An objective's own state tensors (MSC's chain states) are inputs and outputs of the
step, so a stateful objective compiles too (``ParticleObjective.compile_carry``).

Static structure is checked, not assumed: the program is traced twice and the two
graphs must agree. Tracing runs on fake tensors (shapes without data: no arithmetic and
no memory at any N); a program whose shapes depend on values (boolean indexing of the
data) or that uses an operation without a fake implementation is traced on the real
tensors. A model whose Python control flow depends on sampled values (or that cannot
be traced at all) gets a warning that names the reason, and the objective runs eagerly
instead. The graph compiles at its first use and is checked there against itself
uncompiled (:class:`CheckedGraph`).

Compiled artefacts are cached on disk by ``torch.compile`` (its FX-graph and
AOTAutograd caches, keyed by the graph, its input shapes and the torch version; a cache
hit loads the same kernels a miss would build): a sweep's runs with the same shapes
compile once, across processes and launchers. The cache lives in
``$TORCHINDUCTOR_CACHE_DIR`` (default ``$TMPDIR/torchinductor_$USER``; the lab's
``compile_cache_dir`` sets it), and deleting that folder clears it.

The result keeps Pyro's contract: ``differentiable_loss`` returns a tensor whose
backward deposits the graph's gradients into the live parameters, and every parameter
is read through ``pyro.param`` so that ``SVI`` sees and steps it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributions import transform_to
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_elbo_lab.engine.graph_threads import graph_threads
from pyro_elbo_lab.engine.parameters import parameter_constraints, run_with_parameters
from pyro_elbo_lab.errors import first_line

#: How every warning of the compiled path starts.
WARNING_PREFIX = "objective.compile: "


class NotStaticError(RuntimeError):
    """The model and guide do not trace to one fixed tensor program."""


@dataclass
class TracedStep:
    """A pure step: ``graph(*params, *tensor_args, *noise) -> (loss, *grads)``."""

    graph: Callable[..., Sequence[torch.Tensor]]
    noise: torch.fx.GraphModule
    param_names: tuple[str, ...]
    #: the same step as an FX graph, uncompiled (to trace further steps through it)
    traced: torch.fx.GraphModule
    #: how it was traced: "fake" (shapes only) or "real" (value-dependent shapes)
    tracing: str

    def __call__(
        self, params: Sequence[torch.Tensor], tensor_args: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, Sequence[torch.Tensor], Sequence[torch.Tensor]]:
        """``(loss, grads, extras)`` for ``params`` and the graph's other inputs."""
        with torch.no_grad():
            noise = self.noise()
            loss, *rest = self.graph(*params, *tensor_args, *noise)
        count = len(self.param_names)
        return loss, rest[:count], rest[count:]


class CheckedGraph:
    """A traced graph, compiled on its first call and checked there against itself.

    The first call runs the compiled graph and the traced one on the same inputs (the
    noise is an input; the RNG is forked for random operations left in the graph; the
    inputs the graph writes in place are copied for the traced run) and keeps the
    compiled graph only if every output and every written input agrees to float32
    rounding (compiler kernels fuse and reorder); otherwise, or if compiling fails, it
    warns and runs the traced graph from then on. Compiling lazily means a graph that
    is never called (the loss-only step when :class:`~pyro_elbo_lab.engine.CompiledSVI`
    compiles the whole update) costs no compile time, and tracing needs no full-size run.
    """

    def __init__(
        self, traced: torch.fx.GraphModule, compile_options: dict[str, Any], what: str
    ) -> None:
        self.traced = traced
        self.compile_options = compile_options
        self.what = what
        #: threads of its CPU kernels (:mod:`~pyro_elbo_lab.engine.graph_threads`; the
        #: user's own ``cpp.threads`` wins); None off the CPU or under the user's options
        self.threads: int | None = None
        #: the compiled graph once built and found to agree (None before, or on fallback)
        self.compiled: Callable[..., Sequence[torch.Tensor]] | None = None
        self._run: Callable[..., Sequence[torch.Tensor]] | None = None
        self._written = written_inputs(traced)

    def __call__(self, *inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        if self._run is not None:
            return self._run(*inputs)
        before = {index: inputs[index].clone() for index in self._written}
        copies = {index: value.clone() for index, value in before.items()}
        expected = self.traced(*[copies.get(i, tensor) for i, tensor in enumerate(inputs)])
        reasons = []
        candidates = compile_options_for(
            self.compile_options, inputs, lambda: graph_threads(self.traced)
        )
        if candidates[0] is not self.compile_options:  # the lab's CPU options
            self.threads = candidates[0]["options"]["cpp.threads"]
        for options in candidates:
            try:
                compiled = torch.compile(self.traced, **options)
                with torch.random.fork_rng(devices=cuda_devices(inputs)):
                    outputs = compiled(*inputs)
            except Exception as error:  # any compiler failure: the traced graph still runs
                reasons.append(
                    f"compiling the {self.what} failed ({type(error).__name__}: "
                    f"{first_line(error)})"
                )
            else:
                written = [inputs[index] for index in self._written]
                mismatch = disagreement(
                    [*outputs, *written], [*expected, *(copies[i] for i in self._written)]
                )
                if mismatch is None:
                    self.compiled = self._run = compiled
                    return outputs
                reasons.append(
                    f"the compiled {self.what} disagrees with the traced one ({mismatch})"
                )
            for index, value in before.items():  # undo what the rejected run wrote
                inputs[index].copy_(value)
        warn_fallback(
            reasons[0], f"the traced {self.what} uncompiled (Pyro's Python overhead is still gone)"
        )
        self._run = self.traced
        for index, value in copies.items():  # as the traced run wrote them
            inputs[index].copy_(value)
        return expected


def compile_options_for(
    options: dict[str, Any], inputs: Sequence[torch.Tensor], threads: Callable[[], int]
) -> list[dict[str, Any]]:
    """The ``torch.compile`` options to try, in order, for a graph on ``inputs``
    (``options`` itself, alone, where the lab adds nothing).

    On CPU with inductor and no ``mode`` of the user's (their own ``options`` win):
    kernels on ``threads()`` threads (``cpp.threads``, chosen for the graph's size and the
    free CPUs by :func:`~pyro_elbo_lab.engine.graph_threads.graph_threads`), without
    inductor's probe of the compiler for each vector ISA the CPU lists (``cpp.vec_isa_ok``:
    ten C++ builds, 8.5 s of a first compile with a new cache folder; a compiler without
    AVX-512 fails the build, and the scalar kernels below are tried), first with
    inductor's C++ wrapper (buffer allocation and kernel calls as compiled code, not Python,
    about 30% of a step at N = 10³, experiments/gmm_scale), then, should that disagree
    with the traced graph, with scalar kernels as well (``cpp.simdlen=1``: torch 2.13's
    vectorised CPU kernels give NaN on some fused graphs, e.g. STL with 8 particles on
    the GMM, where scalar ones agree).
    """
    custom = "mode" in options or options.get("backend", "inductor") != "inductor"
    if custom or any(tensor.device.type != "cpu" for tensor in inputs):
        return [options]
    own = {"cpp_wrapper": True, "cpp.vec_isa_ok": True, **options.get("options", {})}
    if "cpp.threads" not in own:
        own["cpp.threads"] = threads()
    return [
        {**options, "options": own},
        {**options, "options": {**own, "cpp.simdlen": own.get("cpp.simdlen", 1)}},
    ]


def written_inputs(graph: torch.fx.GraphModule) -> list[int]:
    """Positions of the inputs ``graph`` writes in place (``copy_`` into a placeholder)."""
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
    targets = {
        node.args[0]
        for node in graph.graph.nodes
        if node.op == "call_function" and node.target is torch.ops.aten.copy_.default
    }
    return [index for index, node in enumerate(placeholders) if node in targets]


class _WithGradients(torch.autograd.Function):
    """A loss value whose backward hands precomputed gradients to its parameters."""

    @staticmethod
    def forward(ctx: Any, loss: torch.Tensor, num_params: int, *params_and_grads: torch.Tensor):
        ctx.grads = params_and_grads[num_params:]
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor):
        grads = [upstream * grad for grad in ctx.grads]
        return None, None, *grads, *([None] * len(grads))


def attach_gradients(
    loss: torch.Tensor, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``loss`` as a tensor whose ``backward()`` adds ``grads`` to ``params``' ``.grad``."""
    return _WithGradients.apply(loss, len(params), *params, *grads)


def with_parameters(
    call: Callable[..., Any],
    args: Sequence[torch.Tensor],
    replacements: dict[str, torch.Tensor],
    live: dict[str, torch.Tensor],
    transforms: dict[str, torch.distributions.Transform],
    modules: Sequence[torch.nn.Module],
) -> Any:
    """``call(*args)`` with the parameters ``live`` (unconstrained, by store name) read as
    ``replacements``: through ``pyro.param`` as the constrained value
    ``transforms[name](replacement)``, and as module attributes by identity
    (:func:`~pyro_elbo_lab.engine.parameters.run_with_parameters`)."""
    by_id = {id(live[name]): value for name, value in replacements.items()}
    return run_with_parameters(
        call,
        tuple(args),
        stored=lambda name: transforms[name](replacements[name]) if name in replacements else None,
        owned=lambda parameter: by_id.get(id(parameter)),
        modules=modules,
    )


def trace_step(
    loss_fn: Callable[..., Sequence[torch.Tensor]],
    param_names: Sequence[str],
    params: Sequence[torch.Tensor],
    tensor_args: Sequence[torch.Tensor],
    modules: Sequence[torch.nn.Module],
    transforms: dict[str, torch.distributions.Transform],
    mode: str | None = None,
) -> tuple[torch.fx.GraphModule, str]:
    """Record ``loss_fn`` and its gradients as one ATen graph; returns it and the
    tracing mode that worked.

    ``loss_fn(*tensor_args)`` returns ``(loss, *extras)`` and is run with the parameters
    ``param_names`` substituted by traced leaves; the graph takes ``(*params,
    *tensor_args)`` and returns ``(loss, *grads, *extras)`` (zeros for parameters the
    loss does not touch; extras, e.g. an objective's new state, without gradients).
    The trace runs on fake tensors (shapes only: no arithmetic, no memory at any N);
    where they cannot follow the program (a shape that depends on values) it runs on
    the real tensors instead (``mode="real"``).
    """

    def loss_and_grads(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves, args = inputs[: len(params)], inputs[len(params) :]
        loss, *extras = with_parameters(
            loss_fn,
            args,
            dict(zip(param_names, leaves, strict=True)),
            dict(zip(param_names, params, strict=True)),
            transforms,
            modules,
        )
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)
        ]
        return (loss, *grads, *(extra.detach() for extra in extras))

    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    args = [a.detach() for a in tensor_args]

    def record(tracing_mode: str) -> torch.fx.GraphModule:
        with pyro.validation_enabled(False):  # validation branches on values; it ran eagerly
            return record_graph(loss_and_grads, [*leaves, *args], tracing_mode)

    if mode is not None:
        return record(mode), mode
    try:
        return record("fake"), "fake"
    except Exception:  # e.g. a value-dependent shape: trace on the real tensors
        return record("real"), "real"


def record_graph(
    function: Callable[..., Any], inputs: Sequence[torch.Tensor], mode: str
) -> torch.fx.GraphModule:
    """``make_fx`` of ``function`` on ``inputs``, on fake copies of them with ``mode="fake"``
    (tensors the program holds itself stay real: they become the graph's constants)."""
    if mode == "real":
        return make_fx(function)(*inputs)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes = [fake_mode.from_tensor(tensor) for tensor in inputs]
    with fake_mode:
        return make_fx(function)(*fakes)


def pure_graph(
    graph: torch.fx.GraphModule, example_inputs: Sequence[torch.Tensor], mode: str
) -> torch.fx.GraphModule:
    """``graph`` with every in-place operation (e.g. ``normal_`` on a fresh buffer) made a
    pure one, and dead code removed."""
    inputs = [tensor.detach() for tensor in example_inputs]
    functional = torch.func.functionalize(graph, remove="mutations")
    pure = record_graph(functional, inputs, mode)
    pure.graph.eliminate_dead_code()
    pure.recompile()
    return pure


def _is_random(node: torch.fx.Node) -> bool:
    target = node.target
    return node.op == "call_function" and torch.Tag.nondeterministic_seeded in getattr(
        target, "tags", ()
    )


def lift_noise(graph: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """Split ``graph`` into a noise program and a pure program taking the noise as inputs.

    The random operations that depend on no input move (with the constant operations
    that feed them) to a graph of their own; in the main graph each becomes a new
    trailing placeholder. Returns ``(noise, pure)``.
    """
    nodes = list(graph.graph.nodes)
    depends_on_input = set()
    for node in nodes:
        if node.op == "placeholder" or any(arg in depends_on_input for arg in node.all_input_nodes):
            depends_on_input.add(node)
    lifted = [node for node in nodes if _is_random(node) and node not in depends_on_input]
    needed = set(lifted)
    for node in reversed(nodes):
        if node in needed:
            needed.update(node.all_input_nodes)

    noise_graph = torch.fx.Graph()
    copies: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in nodes:
        if node in needed:
            copies[node] = noise_graph.node_copy(node, lambda arg: copies[arg])
    noise_graph.output(tuple(copies[node] for node in lifted))
    noise = torch.fx.GraphModule(graph, noise_graph)

    last_input = [node for node in nodes if node.op == "placeholder"][-1]
    for index, node in enumerate(lifted):
        with graph.graph.inserting_after(last_input):
            placeholder = graph.graph.placeholder(f"noise_{index}")
        placeholder.meta = dict(node.meta)
        node.replace_all_uses_with(placeholder)
        graph.graph.erase_node(node)
        last_input = placeholder
    graph.graph.eliminate_dead_code()
    graph.graph.set_codegen(torch.fx.graph.CodeGen())  # plain positional inputs
    graph.recompile()
    noise.recompile()
    return noise, graph


def build_step(
    loss_fn: Callable[..., Sequence[torch.Tensor]],
    param_names: Sequence[str],
    params: Sequence[torch.Tensor],
    tensor_args: Sequence[torch.Tensor],
    modules: Sequence[torch.nn.Module],
    compile_options: dict[str, Any],
) -> TracedStep:
    """Trace (twice, to check the structure is static), lift the noise; the result
    compiles on its first call (:class:`CheckedGraph`).

    :raises NotStaticError: when the two traces differ.
    """
    constraints = parameter_constraints()
    transforms = {name: transform_to(constraints[name]) for name in param_names}
    raw, mode = trace_step(loss_fn, param_names, params, tensor_args, modules, transforms)
    again, _ = trace_step(loss_fn, param_names, params, tensor_args, modules, transforms, mode)
    if raw.code != again.code:
        raise NotStaticError(
            "the model or guide traced to different programs twice (Python control flow "
            "that depends on sampled values or on Python-level randomness)"
        )
    noise, pure = lift_noise(pure_graph(raw, [*params, *tensor_args], mode))
    graph = CheckedGraph(pure, compile_options, "step")
    return TracedStep(graph, noise, tuple(param_names), pure, mode)


def disagreement(outputs: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> str | None:
    """The first of ``outputs`` that differs from ``expected`` beyond float32 rounding
    (compiler kernels fuse and reorder), described, or None."""
    for index, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        finite = want.isfinite()
        if not torch.equal(got.isfinite(), finite):
            return f"output {index} is non-finite where the traced step's is finite"
        scale = want[finite].abs().max() if finite.any() else torch.tensor(0.0)
        if finite.any() and (got[finite] - want[finite]).abs().max() > 1e-3 * (1 + scale):
            return f"output {index} differs by more than 1e-3 relative"
    return None


def cuda_devices(tensors: Sequence[torch.Tensor]) -> list[int]:
    """The CUDA device indices ``tensors`` live on (whose RNG states a fork must keep)."""
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def parameters_read_by(
    run: Callable[[], torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``run`` once and return its result and the parameters it read, by store name
    (their unconstrained leaves)."""
    with poutine.trace(param_only=True) as capture:
        result = run()
    params = {
        name: site["value"].unconstrained()
        for name, site in capture.trace.nodes.items()
        if site["type"] == "param"
    }
    return result, params


def _with_gradients_now(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """``loss`` with its gradients computed now and its autograd graph freed (so that
    tracing and compiling do not run beside a full-size graph), still handing them to
    ``params`` on ``backward()``."""
    if not loss.requires_grad:
        return loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    return attach_gradients(loss.detach(), params, grads)


def read_parameters(names: Sequence[str]) -> list[torch.Tensor]:
    """The live unconstrained leaves of ``names``, read through ``pyro.param`` so that an
    enclosing ``SVI`` step records (and later steps) them."""
    return [pyro.param(name).unconstrained() for name in names]


def warn_fallback(reason: str, instead: str = "the eager engine") -> None:
    """Say why the compiled step does not run, and what runs instead."""
    warnings.warn(
        f"{WARNING_PREFIX}{reason}; running {instead} instead", RuntimeWarning, stacklevel=3
    )


def _split_tensors(args: tuple, kwargs: dict) -> tuple[list[torch.Tensor], Callable, tuple]:
    """The tensor arguments (graph inputs), a function rebuilding ``(args, kwargs)`` from
    them, and a key of everything else (baked into the graph)."""
    keys = sorted(kwargs)
    values = [*args, *(kwargs[key] for key in keys)]
    positions = [i for i, value in enumerate(values) if isinstance(value, torch.Tensor)]
    tensors = [values[i] for i in positions]

    def rebuild(*new: torch.Tensor) -> tuple[tuple, dict]:
        filled = list(values)
        for i, tensor in zip(positions, new, strict=True):
            filled[i] = tensor
        return tuple(filled[: len(args)]), dict(zip(keys, filled[len(args) :], strict=True))

    signature = tuple(
        (tuple(v.shape), v.dtype, v.device) if isinstance(v, torch.Tensor) else ("value", repr(v))
        for v in values
    )
    return tensors, rebuild, (tuple(keys), signature)


def _identity(program: Callable[..., Any]) -> tuple[int, ...]:
    """A stable key for a model or guide (a bound method is a new object per access)."""
    if hasattr(program, "__self__") and hasattr(program, "__func__"):
        return (id(program.__self__), id(program.__func__))
    return (id(program),)


class CompiledPath:
    """An objective's compiled steps, one per (model, guide, argument signature, state).

    :param compile_options: keyword arguments of ``torch.compile`` (``mode``,
        ``backend``, ``fullgraph``, ...).
    """

    def __init__(self, compile_options: dict[str, Any] | None = None) -> None:
        self.compile_options = dict(compile_options or {})
        self._steps: dict[tuple, TracedStep | None] = {}

    def differentiable_loss(
        self,
        eager: Callable[[tuple, dict], torch.Tensor],
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        state: tuple = (),
        carry: Any = None,
    ) -> torch.Tensor:
        """``eager(args, kwargs)``'s value and gradient, from the compiled step once built.

        The first call for a new key runs ``eager`` (which also initialises the
        parameters and runs Pyro's validation), then traces and compiles; the RNG state
        is restored afterwards, so the draws of later steps are the eager path's.
        ``carry`` (an objective with ``compile_carry`` / ``load_compile_carry``) has
        its state tensors passed through the step: read before, replaced after.
        """
        tensors, rebuild, signature = _split_tensors(args, kwargs)
        key = self._key(model, guide, signature, state)
        carried_in = carry.compile_carry() if carry is not None else []
        if key in self._steps:
            step = self._steps[key]
            if step is None:
                return eager(args, kwargs)
            params = read_parameters(step.param_names)
            loss, grads, carried_out = step(params, [*tensors, *carried_in])
            if carry is not None:
                carry.load_compile_carry(list(carried_out))
            return attach_gradients(loss, params, grads)
        loss, params = parameters_read_by(lambda: eager(args, kwargs))
        loss = _with_gradients_now(loss, list(params.values()))
        modules = [part for part in (model, guide) if isinstance(part, torch.nn.Module)]
        after = carry.compile_carry() if carry is not None else []

        def traced_loss(*new: torch.Tensor) -> tuple[torch.Tensor, ...]:
            inputs, carried = new[: len(tensors)], list(new[len(tensors) :])
            if carry is None:
                return (eager(*rebuild(*inputs)),)
            carry.load_compile_carry(carried)
            return (eager(*rebuild(*inputs)), *carry.compile_carry())

        try:
            self._steps[key] = self._build(traced_loss, params, [*tensors, *carried_in], modules)
        finally:
            if carry is not None:  # the tracing left stand-ins there
                carry.load_compile_carry(after)
        return loss

    def step_for(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        state: tuple = (),
    ) -> tuple[TracedStep | None, list[torch.Tensor]]:
        """The built step for these arguments (None: not built yet, or eager) and the
        tensors among the arguments, in the order the step takes them."""
        tensors, _, signature = _split_tensors(args, kwargs)
        return self._steps.get(self._key(model, guide, signature, state)), tensors

    def compiled_graphs(self) -> list[CheckedGraph]:
        """The steps' graphs that run compiled."""
        return [
            step.graph
            for step in self._steps.values()
            if step is not None
            and isinstance(step.graph, CheckedGraph)
            and step.graph.compiled is not None
        ]

    @staticmethod
    def _key(model: Callable, guide: Callable, signature: tuple, state: tuple) -> tuple:
        return (_identity(model), _identity(guide), signature, state)

    def _build(
        self,
        loss_fn: Callable[..., Sequence[torch.Tensor]],
        params: dict[str, torch.Tensor],
        tensors: list[torch.Tensor],
        modules: list[torch.nn.Module],
    ) -> TracedStep | None:
        # The tracing passes run Pyro on traced stand-ins: hide their param sites from
        # outer handlers (SVI would step the stand-ins), and their draws from the RNG.
        with (
            poutine.block(),
            torch.random.fork_rng(devices=cuda_devices([*params.values(), *tensors])),
        ):
            try:
                step = build_step(
                    loss_fn,
                    list(params),
                    list(params.values()),
                    tensors,
                    modules,
                    self.compile_options,
                )
            except NotStaticError as error:
                warn_fallback(str(error))
                return None
            except Exception as error:  # any tracing failure (compiling comes at first use)
                warn_fallback(
                    f"tracing the step failed ({type(error).__name__}: "
                    f"{first_line(error)}); a model needs "
                    "static structure and tensor operations only"
                )
                return None
        return step
