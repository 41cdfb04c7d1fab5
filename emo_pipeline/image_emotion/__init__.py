"""Image -> emotion: hand-made features, the SVM and feature ridge, torch distribution models, the ESM
models, the ensemble and prediction on new images."""
