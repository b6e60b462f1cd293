"""The ReaDe instruction interpreter: answer format, prompts and the camera encoder."""
