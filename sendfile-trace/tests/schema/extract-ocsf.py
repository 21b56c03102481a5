# Extracts the facts tests/siem.rs checks OCSF output against from a clone of
# https://github.com/ocsf/ocsf-schema: python3 extract-ocsf.py CLONE > ocsf-1.2.0.json
import json, subprocess, sys
REPO=sys.argv[1] if len(sys.argv) > 1 else '.'; REF='refs/tags/v1.2.0'
def show(p):
    return json.loads(subprocess.check_output(['git','-C',REPO,'show',f'{REF}:{p}']))
def merge_attrs(d, base_dir):
    out={}
    attrs=d.get('attributes',{})
    for inc in attrs.get('$include',[]) if isinstance(attrs.get('$include'),list) else ([attrs['$include']] if '$include' in attrs else []):
        inc_d=show(inc)
        for k,v in merge_attrs(inc_d, base_dir).items():
            out.setdefault(k,{}).update(v)
            if inc.startswith('profiles/'): out[k]['profile']=inc_d.get('name')
    for k,v in attrs.items():
        if k=='$include': continue
        out.setdefault(k,{}).update(v)
    return out
files=subprocess.check_output(['git','-C',REPO,'ls-tree','-r','--name-only',REF]).decode().split()
def find(kind,name):
    for f in files:
        if f.startswith(kind+'/') and f.endswith('.json'):
            try: d=show(f)
            except Exception: continue
            if d.get('name')==name: return d
    raise KeyError(name)
cache={}
def resolved(kind,name):
    if (kind,name) in cache: return cache[(kind,name)]
    d=find(kind,name)
    attrs={}
    if 'extends' in d:
        pd=resolved(kind,d['extends'])
        for k,v in pd['attributes'].items(): attrs[k]=dict(v)
    for k,v in merge_attrs(d,kind).items():
        attrs.setdefault(k,{}).update(v)
    r={'name':d['name'],'uid':d.get('uid'),'attributes':attrs,'category':d.get('category')}
    cache[(kind,name)]=r; return r
dic=show('dictionary.json')['attributes']
cats=show('categories.json')['attributes']
out={'source':f'https://github.com/ocsf/ocsf-schema tag v1.2.0 (commit {subprocess.check_output(["git","-C",REPO,"rev-parse",REF+"^{commit}"]).decode().strip()}), extracted by resolving extends/$include of events/, objects/, profiles/, dictionary.json','version':'1.2.0','classes':{},'objects':{}}
for name,cat in [('base_event',None),('file_activity','system'),('network_activity','network')]:
    r=resolved('events',name)
    catuid=cats[cat]['uid'] if cat else 0
    if not cat: r['uid']=0
    attrs={}
    for k,v in r['attributes'].items():
        a={'requirement':v.get('requirement','optional'),'type':dic.get(k,{}).get('type')}
        if 'profile' in v: a['profile']=v['profile']
        if 'enum' in v: a['enum']=sorted(int(x) for x in v['enum'])
        elif 'enum' in dic.get(k,{}): a['enum']=sorted(int(x) for x in dic[k]['enum'])
        attrs[k]=a
    cu=catuid*1000+r['uid']
    # Derived uids, as the OCSF server compiles them for each class.
    attrs['category_uid']['enum']=[catuid]
    attrs['class_uid']['enum']=[cu]
    attrs['type_uid']['enum']=[cu*100+a for a in attrs['activity_id']['enum']]
    out['classes'][name]={'class_uid':cu,'category_uid':catuid,'attributes':attrs}
for obj in ['process','device','metadata','product','file','network_endpoint','network_connection_info','network_traffic','actor','user','container','os']:
    r=resolved('objects',obj)
    out['objects'][obj]={k:dict({'requirement':v.get('requirement','optional'),'type':dic.get(k,{}).get('type')}, **({'profile':v['profile']} if 'profile' in v else {})) for k,v in r['attributes'].items()}
json.dump(out,sys.stdout,indent=1,sort_keys=True)
