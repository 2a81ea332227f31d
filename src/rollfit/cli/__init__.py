"""rollfit.cli"""
