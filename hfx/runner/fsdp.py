"""Sharded data parallelism (FSDP2) for the shared training loop: ``train.fsdp=true``.

Each process keeps a 1/N slice (dim 0) of every parameter of a sharded module, of its gradient and of its
AdamW state; a block's full weights are all-gathered just before its forward and backward and freed after
(PyTorch's ``fully_shard``, FSDP2: Zhao et al., "PyTorch FSDP", VLDB 2023). Who applies it:

- on CPU (gloo), hfx itself: :func:`shard_model` calls ``fully_shard`` on every transformer block, then on
  the whole model, over a 1-D device mesh of all ranks. accelerate launched with its FSDP plugin on a CPU
  falls back to plain data parallelism (``DistributedType.MULTI_CPU``) without a word, so this is the path
  the CPU tests exercise;
- on CUDA, accelerate: :func:`accelerate_plugin` is its ``FullyShardedDataParallelPlugin(fsdp_version=2)``
  with the same wrap policy, and ``Accelerator.prepare`` shards. **This path is untested here** (no GPU):
  it is the reference library's own code, but nothing in hfx's test suite runs it.

What is sharded: FSDP2 shards *every* parameter of a wrapped module, frozen or not, so a frozen base with
LoRA adapters has its base weights sharded too (1/N of them per rank); only trainable parameters have
gradients and optimizer state, and those are sharded the same way. Buffers (rotary tables, position ids) are
not sharded: each rank holds them whole.

The wrap policy (accelerate's ``TRANSFORMER_BASED_WRAP``): the classes named in ``_no_split_modules`` of the
transformers model inside (``LlamaDecoderLayer``, ``BertLayer``, ...); where a model names none, the
members of its ``ModuleList`` of layers. A model with neither is a one-line :class:`HfxError`.

API used by :class:`hfx.runner.loop.TrainLoop` and ``hfx run`` (and meant for other training loops):

- :func:`wanted` -- whether this run shards (``train.fsdp`` and more than one process);
  :func:`check_launch` warns about a single process, :func:`check_recipe` refuses a recipe outside the loop;
- :func:`block_modules` -- the modules the wrap policy picks;
- :func:`shard_model` ``(model, cpu_offload=False) -> model`` -- apply FSDP2 in place (CPU path);
- :func:`remap_param_groups` -- optimizer groups built before sharding, pointed at the sharded parameters;
- :func:`shard_for_loop` -- both of the above for a training loop (on CUDA: hand the classes to accelerate);
- :func:`full_state_dict` ``(model) -> dict`` -- the complete state dict on rank 0 (``{}`` elsewhere);
- :func:`gathered_state` / :func:`restore_state` -- checkpoint states, gathered (rank 0) and put back;
- :func:`local_bytes` -- what this rank holds: parameter, gradient and optimizer-state bytes;
- :func:`unshard_for_save` -- every rank gathers; rank 0's model becomes a plain, complete model, so a
  recipe's ``save`` (``save_pretrained``, peft's adapter format, a merge) writes it whole.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from hfx.errors import HfxError

__all__ = ["REFUSED", "accelerate_plugin", "block_modules", "check_launch", "check_recipe", "full_state_dict", "gathered_state",
           "is_sharded", "local_bytes", "remap_param_groups", "restore_state", "shard_for_loop", "shard_model",
           "unshard_for_save", "wanted"]


# Recipes that train through the shared loop but do what a sharded model cannot, by plugin name.
REFUSED = {"qat": "its recipe deep-copies the fine-tuned model for each PTQ and QAT phase, and FSDP2 modules "
                  "cannot be copied (copy.deepcopy raises)"}


def wanted(train_cfg: Any, num_processes: int) -> bool:
    """Whether to shard: ``train.fsdp`` in a run of more than one process."""
    return bool(getattr(train_cfg, "fsdp", False)) and num_processes > 1


def check_launch(train_cfg: Any, num_processes: int, is_main: bool) -> None:
    """``train.fsdp`` in a single process: nothing to shard across, so a warning line, then plain training."""
    if getattr(train_cfg, "fsdp", False) and num_processes < 2 and is_main:
        print("hfx: warning: train.fsdp=true in a single process: nothing to shard across, training unsharded; "
              "launch with torchrun --nproc_per_node N -m hfx run ... to shard", file=sys.stderr)


def check_recipe(ctx: Any, plugin: str, recipe: type | None = None) -> None:
    """Refuse ``train.fsdp`` for a recipe that does not train through the shared loop.

    Called with the recipe class before its setup (its module must use :class:`hfx.runner.loop.TrainLoop`:
    ppo and grpo run trainers of their own, quant and icl do not train) and without it after training (the
    recipe built no loop after all).

    Raises:
        HfxError: one line naming the plugin.
    """
    if not wanted(ctx.run.train, ctx.accelerator.num_processes):
        return
    if plugin in REFUSED:
        raise HfxError(f"train.fsdp=true is not supported by plugin {plugin!r}: {REFUSED[plugin]}; drop train.fsdp "
                       "(plain data parallel still works)")
    uses_loop = recipe is None or getattr(sys.modules.get(recipe.__module__), "TrainLoop", None) is not None
    if not uses_loop or (recipe is None and not ctx.sharded):
        raise HfxError(f"train.fsdp=true is not supported by plugin {plugin!r}: its recipe does not train "
                       "through hfx's shared training loop; drop train.fsdp (plain data parallel still works)")


def _wrap_class_names(model: nn.Module) -> set[str]:
    """``_no_split_modules`` of every transformers model inside ``model`` (a set or list in transformers)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that become FSDP units of their own, outermost first (nested ones are dropped).

    The classes of ``_no_split_modules`` (accelerate's TRANSFORMER_BASED_WRAP reads the same attribute);
    else the members of the largest ``nn.ModuleList`` whose members all share one class and hold parameters.

    Raises:
        HfxError: no such module (a model without transformer blocks).
    """
    names = _wrap_class_names(model)
    found = [m for m in model.modules() if type(m).__name__ in names]
    if not found:
        lists = [ml for ml in model.modules() if isinstance(ml, nn.ModuleList) and len(ml) > 0
                 and len({type(c) for c in ml}) == 1 and any(True for _ in ml[0].parameters())]
        found = list(max(lists, key=len)) if lists else []
    if not found:
        raise HfxError(f"train.fsdp: {type(model).__name__} has no transformer blocks to shard (no "
                       "_no_split_modules and no ModuleList of layers); train it without train.fsdp")
    inside: set[int] = set()
    for m in found:  # a block inside another block (BertEmbeddings is not, but be safe) joins the outer one
        inside.update(id(c) for c in m.modules() if c is not m)
    return [m for m in found if id(m) not in inside]


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` (or a module inside it) is under FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def _units(model: nn.Module) -> list[nn.Module | list[nn.Module]]:
    """FSDP units, innermost first: the blocks, then the output head (grouped with the input embeddings when
    the two share their weight), then the body (``model.<base_model_prefix>``); the root comes last."""
    units: list[nn.Module | list[nn.Module]] = list(block_modules(model))
    get_out = getattr(model, "get_output_embeddings", None)
    get_in = getattr(model, "get_input_embeddings", None)
    head = get_out() if callable(get_out) else None
    emb = get_in() if callable(get_in) else None
    if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
        tied = isinstance(emb, nn.Module) and {id(p) for p in head.parameters()} & {id(p) for p in emb.parameters()}
        units.append([emb, head] if tied else head)  # type: ignore[list-item]  # one group: a shared weight
    body = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    if isinstance(body, nn.Module) and body is not model:
        units.append(body)
    return units


def shard_model(model: nn.Module, cpu_offload: bool = False) -> nn.Module:
    """Apply FSDP2 in place: ``fully_shard`` on each unit of the wrap policy, then on ``model`` (the root).

    The units: each transformer block (:func:`block_modules`); the output head, grouped with the input
    embeddings when they share a weight (``fully_shard([embeddings, head])``: FSDP2 refuses a parameter in two
    groups); the body ``model.<base_model_prefix>``; the root holds what is left (a task head). The head and the
    body are units of their own because losses call them directly (hfx's ``completion_loss`` runs the body,
    then the head on the labelled positions only), and a module outside every unit called on its own would
    meet sharded weights. The root is initialised at once (FSDP2 otherwise takes the first unit to run forward
    as the root).

    Every rank must call it with identical weights (the runner seeds every process alike). The mesh is 1-D
    over all ranks of the default process group, on the device type of the model's parameters.

    Args:
        model: The model, unsharded; its parameters become DTensors sharded on dim 0 (Shard(0)).
        cpu_offload: Keep shards, gradients and optimizer state in CPU memory (``CPUOffloadPolicy``);
            only meaningful on CUDA (on CPU they are there already, and it is ignored).

    Returns:
        ``model`` itself (its class becomes ``FSDP<Class>``, a subclass).

    Raises:
        HfxError: no transformer block to wrap.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, OffloadPolicy, fully_shard

    units = _units(model)
    device = next(model.parameters()).device.type
    mesh = init_device_mesh(device, (dist.get_world_size(),))
    offload = CPUOffloadPolicy() if cpu_offload and device != "cpu" else OffloadPolicy()
    for unit in units:
        fully_shard(unit, mesh=mesh, offload_policy=offload)
    fully_shard(model, mesh=mesh, offload_policy=offload)
    model._get_fsdp_state()._lazy_init()  # type: ignore[operator]  # the root is `model`, whatever runs first
    # One all-gather now, outside any inference_mode: FSDP2 creates each unsharded parameter at its first
    # all-gather and reuses it, so one created under an evaluation's inference_mode could never be trained.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.unshard()
            module.reshard()
    return model


def remap_param_groups(groups: list[dict[str, Any]], before: dict[int, str], model: nn.Module) -> list[dict[str, Any]]:
    """Point optimizer groups built before sharding at the sharded parameters (``fully_shard`` replaces them).

    Args:
        groups: ``[{"params": [...], ...}]`` holding the parameters as they were before sharding.
        before: ``id(parameter) -> name`` taken before sharding (``model.named_parameters()``).
        model: The sharded model.
    """
    now = dict(model.named_parameters())
    return [{**g, "params": [now[before[id(p)]] for p in g["params"]]} for g in groups]


def shard_for_loop(acc: Any, model: nn.Module, groups: list[dict[str, Any]],
                   cpu_offload: bool) -> tuple[nn.Module, list[dict[str, Any]]]:
    """What a training loop does before building its optimizer: on CPU shard ``model`` (:func:`shard_model`)
    and remap its optimizer ``groups``; under accelerate's FSDP plugin (CUDA) only name the block classes,
    which ``acc.prepare`` wraps. Returns the model and the groups to build the optimizer from."""
    if acc.distributed_type.value == "FSDP":  # untested here: accelerate shards in prepare()
        acc.state.fsdp_plugin.transformer_cls_names_to_wrap = sorted({type(b).__name__ for b in block_modules(model)})
        return model, groups
    before = {id(p): n for n, p in model.named_parameters()}
    model = shard_model(model, cpu_offload=cpu_offload)
    return model, remap_param_groups(groups, before, model)


def _options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_state_dict(model: nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The complete state dict, gathered from every rank's slice, on rank 0's CPU; ``{}`` on the other ranks.

    Every rank must call it (it all-gathers). ``trainable_only`` leaves frozen parameters out (buffers stay).
    Uses ``torch.distributed.checkpoint.state_dict.get_model_state_dict`` with ``full_state_dict`` and
    ``cpu_offload``.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True, ignore_frozen_params=trainable_only))


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the order ``optimizer.state_dict()`` numbers them."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]


def gathered_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A checkpoint's model and optimizer states, complete, on rank 0 (every rank must call it).

    Returns:
        The trainable parameters and buffers (what :func:`hfx.runner.checkpoint.save_checkpoint` keeps), and
        the optimizer state numbered as an unsharded ``optimizer.state_dict()`` numbers it (so the checkpoint
        has the same layout as one of an unsharded run). Both empty on ranks other than 0.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    # clone(): tied weights share storage, which safetensors refuses to write twice.
    model_sd = {k: v.detach().clone().contiguous() for k, v in full_state_dict(model, trainable_only=True).items()}
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))  # keyed by name
    if dist.get_rank() != 0:
        return {}, {}
    index = {n: i for i, n in enumerate(_param_names(model, optimizer))}
    state = {index[name]: slots for name, slots in optim_sd["state"].items()}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in optim_sd["param_groups"]]
    return model_sd, {"state": state, "param_groups": groups}


def restore_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict[str, torch.Tensor],
                  optim_sd: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Put complete states (as :func:`gathered_state` returns them, read from disk by every rank) back into the
    sharded ``model`` and ``optimizer``: each rank keeps its own slice.

    Returns:
        The model keys missing from ``model_sd`` and those in it that the model lacks (as ``load_state_dict``).
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    own = set(model.state_dict())  # FSDP2's state_dict keys are the module's own
    missing, unexpected = sorted(own - set(model_sd)), sorted(set(model_sd) - own)
    if unexpected:
        return missing, unexpected
    set_model_state_dict(model, model_sd, options=_options(strict=False))
    names = _param_names(model, optimizer)
    by_name = {"state": {names[int(i)]: slots for i, slots in optim_sd["state"].items()},
               "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in optim_sd["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=_options())
    return missing, unexpected


def _unwrap(model: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Turn an FSDP2 model back into a plain one holding the complete tensors of ``full``.

    torch has no inverse of ``fully_shard``; this undoes its three changes on each FSDP module: the forward
    hooks, the state-dict hooks (they would swap the sharded DTensors back in) and the ``FSDP<Class>``
    class, then registers a plain ``nn.Parameter`` (same ``requires_grad``; tied names share one) per name.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        state = module._get_fsdp_state()
        for handle in (state._pre_forward_hook_handle, state._post_forward_hook_handle):
            handle.remove()
        group = state._fsdp_param_group
        if group is not None:
            for handle in [*group._module_to_pre_save_state_dict_hook_handle.values(),
                           *group._module_to_pre_load_state_dict_hook_handle.values()]:
                handle.remove()
        module.__class__ = next(c for c in type(module).__bases__ if not issubclass(c, FSDPModule))
    made: dict[int, nn.Parameter] = {}
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        if id(param) not in made:
            made[id(param)] = nn.Parameter(full[name].to(param.dtype), requires_grad=param.requires_grad)
        model.get_submodule(owner)._parameters[leaf] = made[id(param)]


def unshard_for_save(model: nn.Module) -> nn.Module:
    """Gather the complete weights (every rank must call it); rank 0's ``model`` becomes a plain model.

    After this, rank 0 evaluates and saves ``model`` as if it had never been sharded (``save_pretrained``,
    peft's adapter files, merging adapters into the base); the other ranks' models stay sharded and must
    not be used again.

    Returns:
        ``model`` itself.
    """
    import torch.distributed as dist

    full = full_state_dict(model)
    if dist.get_rank() == 0:
        _unwrap(model, full)
    return model


def local_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes this rank holds: its parameter shards (frozen ones included), gradient shards, optimizer state and
    buffers (never sharded: rotary tables, quant's packed codes and scales).

    A DTensor counts its local shard (``to_local()``), a plain tensor its whole size: for an unsharded model
    these are the single process's figures.
    """
    def size(t: torch.Tensor) -> int:
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    params = list(model.parameters())
    state = optimizer.state.values() if optimizer is not None else []
    return {"parameters": sum(size(p) for p in params),
            "trainable_parameters": sum(size(p) for p in params if p.requires_grad),
            "gradients": sum(size(p.grad) for p in params if p.grad is not None),
            "optimizer_state": sum(size(v) for slots in state for v in slots.values() if torch.is_tensor(v)),
            "buffers": sum(size(b) for b in model.buffers())}


def accelerate_plugin(cpu_offload: bool) -> Any:
    """accelerate's ``FullyShardedDataParallelPlugin`` for the CUDA path: FSDP2, blocks by transformer class,
    full state dicts. **Untested here** (no GPU); the classes to wrap are set by :func:`block_modules` when
    the loop prepares the model."""
    from accelerate import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                          cpu_offload=cpu_offload, state_dict_type="FULL_STATE_DICT",
                                          reshard_after_forward=True)
