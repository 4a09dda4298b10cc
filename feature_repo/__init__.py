"""feature_repo"""
