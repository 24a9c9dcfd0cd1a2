"""The distinct layers of two reference networks as workload specs (batch 1, 224x224, fp32, NCHW).

Used to record the transfer-learning dataset before whole-model import exists: each conv carries a bias + ReLU
epilogue (batch norm folded), each depthwise conv too, and the classifier is a dense + bias.
"""

from __future__ import annotations

RESNET18 = (
    "conv2d:1,3,224,224,64,7,2,3",
    "conv2d:1,64,56,56,64,3,1,1",
    "conv2d:1,64,56,56,128,3,2,1",
    "conv2d:1,128,28,28,128,3,1,1",
    "conv2d:1,64,56,56,128,1,2,0",
    "conv2d:1,128,28,28,256,3,2,1",
    "conv2d:1,256,14,14,256,3,1,1",
    "conv2d:1,128,28,28,256,1,2,0",
    "conv2d:1,256,14,14,512,3,2,1",
    "conv2d:1,512,7,7,512,3,1,1",
    "conv2d:1,256,14,14,512,1,2,0",
    "dense:1,512,1000",
)

MOBILENET_V1 = (
    "conv2d:1,3,224,224,32,3,2,1",
    "depthwise:1,32,112,112,3,1,1",
    "conv2d:1,32,112,112,64,1,1,0",
    "depthwise:1,64,112,112,3,2,1",
    "conv2d:1,64,56,56,128,1,1,0",
    "depthwise:1,128,56,56,3,1,1",
    "conv2d:1,128,56,56,128,1,1,0",
    "depthwise:1,128,56,56,3,2,1",
    "conv2d:1,128,28,28,256,1,1,0",
    "depthwise:1,256,28,28,3,1,1",
    "conv2d:1,256,28,28,256,1,1,0",
    "depthwise:1,256,28,28,3,2,1",
    "conv2d:1,256,14,14,512,1,1,0",
    "depthwise:1,512,14,14,3,1,1",
    "conv2d:1,512,14,14,512,1,1,0",
    "depthwise:1,512,14,14,3,2,1",
    "conv2d:1,512,7,7,1024,1,1,0",
    "depthwise:1,1024,7,7,3,1,1",
    "conv2d:1,1024,7,7,1024,1,1,0",
    "dense:1,1024,1000",
)

MODELS = {"resnet18": RESNET18, "mobilenet_v1": MOBILENET_V1}
