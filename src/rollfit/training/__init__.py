"""rollfit.training"""
