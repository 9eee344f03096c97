from .trainer import Trainer, build_evaluator, clip_global_norm, create_ddp_model, scale_to_workers
