"""rollfit.data"""
