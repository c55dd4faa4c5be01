"""fewshot: few-shot GAN fine-tuning with StyleGAN2 (ADA, DiffAugment, APA, FreezeD, AdaFM, Reg-DGM, DISP)."""

__version__ = "0.1.0"
