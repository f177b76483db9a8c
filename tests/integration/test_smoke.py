def test_models_list_has_default(openai_client, default_model):
    ids = [m.id for m in openai_client.models.list().data]
    assert default_model in ids
