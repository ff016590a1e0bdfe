"""Training jobs: preprocessing of source images and LoRA / full fine-tuning."""
