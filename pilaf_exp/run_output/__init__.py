"""What a run writes into its own directory, and the training-time callbacks that write it (W&B pairs)."""
