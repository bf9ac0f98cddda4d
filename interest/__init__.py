"""interest: user interest embeddings from clickstream logs with attention encoders, on Spark."""

import os

# TensorFlow 2.21's oneDNN kernels block their calling thread until their parallel work is done.
# When two ops run at once on a small machine, both callers can hold the whole thread pool and
# wait for each other forever (seen on 2 cores mid-training). One op at a time removes that, and
# each op still uses every core. Set before TensorFlow starts; an explicit setting wins.
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
