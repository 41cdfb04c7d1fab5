"""Objects <-> emotions: GloVe objects -> emotion models, the emotion -> objects score baseline and MLP,
ranking metrics."""
