from .trainer import Trainer, clip_global_norm, create_ddp_model, scale_to_workers
