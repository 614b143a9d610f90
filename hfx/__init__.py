"""hfx: readable, validated extensions of the Hugging Face stack."""
