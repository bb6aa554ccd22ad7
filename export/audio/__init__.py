"""The audio path of the exporter: the MFCC front-end as a graph, its DSP constants, the DS-CNN."""
