from .trainer import Trainer, create_ddp_model
