"""placeholder"""
def checks():
    return []
