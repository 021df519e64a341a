"""Distributed training without CUDA: the gloo backend and a device-aware DDP.

mmengine 0.10.7 assumes a GPU once ``launcher != 'none'``: ``init_dist``
calls ``torch.cuda.set_device`` and ``Runner.wrap_model`` passes
``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module. On a machine
without CUDA, :func:`setup_distributed` initialises the process group with
gloo itself (mmengine then skips its own initialisation) and selects
:class:`DeviceAwareDistributedDataParallel`, so ``tools/dist_train.sh`` runs
with CPU processes. With CUDA, nothing changes. The tools call it as an
explicit step after reading the config.
"""
import os

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DeviceAwareDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for a CPU module.

    NOTE: mmengine only forwards ``device_ids`` to subclasses of torch's DDP;
    this class is one, so the runner passes them and we discard them here.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        first = next(module.parameters(), None)
        if first is not None and first.device.type == 'cpu':
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def setup_distributed(cfg, launcher: str) -> None:
    """Make ``cfg`` runnable under ``launcher`` on this machine (in place).

    Sets ``cfg.launcher``; without CUDA and with ``launcher='pytorch'`` it
    also initialises the gloo process group (from ``RANK`` and
    ``WORLD_SIZE``) and selects :class:`DeviceAwareDistributedDataParallel`.
    """
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs CUDA on this version of mmengine; '
            'without a GPU use --launcher pytorch (tools/dist_train.sh), which '
            'runs CPU processes with the gloo backend.')
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='DeviceAwareDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def destroy_distributed(wait_for_peers: bool = True) -> None:
    """Tear the process group down before the interpreter exits.

    NOTE: with gloo, a rank that exits while a peer's background threads still
    talk to it makes that peer abort ("terminate called without an active
    exception") after a run that succeeded. Every rank therefore waits for the
    others (``wait_for_peers``; skip it after an error, where a peer may never
    arrive) and then destroys the group, which mmengine never does.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    if wait_for_peers:
        torch_dist.barrier()
    torch_dist.destroy_process_group()
