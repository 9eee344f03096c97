from .trainer import Trainer, create_ddp_model, scale_to_workers
