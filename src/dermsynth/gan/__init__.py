"""StyleGAN2(-ADA): networks, operators, training (the GAN stage)."""
